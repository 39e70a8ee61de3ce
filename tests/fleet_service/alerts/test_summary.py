"""What the dashboard reads in one request: the fleet's count of firing alerts (not acknowledged, not silenced
now) with the worst severity among them, and the open alerts of a page of units; and which active silence covers
an open alert now, also for a silence created after the alert fired."""

from __future__ import annotations

import pytest

from tests.fleet_service.alerts.support import (
    FAST,
    alerts,
    editable,
    metrics,
    online_unit,
    only_rule,
    rules_by_builtin,
    wait_alert,
)
from tests.fleet_service.stack_on import stack_on
from tests.support.auth import token_for
from tests.support.services import wait_for


def shorten(api, rule: dict, **changes) -> dict:
    r = api.put(f"/api/alert-rules/{rule['id']}", json={**editable(rule), "for_s": 0, **changes})
    assert r.status_code == 200, r.text
    return r.json()


def summary(api, *units: str, headers=None) -> dict:
    params = {"device_id": ",".join(units)} if units else {}
    r = api.get("/api/alerts/summary", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_summary_counts_what_needs_someone_and_follows_acks_and_silences(tmp_path, database):
    with stack_on(database, tmp_path, **FAST) as stack, stack.client() as api:
        only_rule(api, {"disk", "temperature"})
        builtins = rules_by_builtin(api)
        disk = shorten(api, builtins["disk"])  # warning
        temp = shorten(api, builtins["temperature"], severity="critical")
        assert summary(api) == {"firing": 0, "firing_worst": None, "open": 0, "units": []}

        hall = online_unit(stack, api, "hall-1", tags=["hall"])
        door = online_unit(stack, api, "door-1", tags=["door"])
        online_unit(stack, api, "calm-1").stop_clean()
        metrics(hall, disk_percent=96.0, temp_c=91.0)
        metrics(door, disk_percent=97.0)
        wait_for(lambda: len(alerts(api, state="open")) == 3, timeout=15, what="three alerts")
        assert summary(api)["firing"] == 3 and summary(api)["firing_worst"] == "critical"
        page = summary(api, "hall-1", "door-1", "calm-1")
        assert page["units"] == [
            {"device_id": "door-1", "open": 1, "firing": 1, "worst": "warning"},
            {"device_id": "hall-1", "open": 2, "firing": 2, "worst": "critical"},
        ]
        assert summary(api, "door-1")["units"] == [page["units"][0]]  # only the units asked for ...
        assert summary(api, "door-1")["firing"] == 3  # ... the fleet's count stays the fleet's

        # open alerts in the order someone on call works through them: firing before acknowledged, the worst first
        hall_temp = wait_alert(api, "hall temperature", unit="hall-1", rule=temp["id"])
        operator = {"Authorization": f"Bearer {token_for(stack, 'operator', 'night')}"}
        assert api.post(f"/api/alerts/{hall_temp['id']}/ack", headers=operator).status_code == 200
        triage = alerts(api, state="open", sort="triage")
        assert [(a["device_id"], a["rule_id"], a["state"]) for a in triage][-1] == (
            "hall-1",
            temp["id"],
            "acknowledged",
        )
        assert {a["rule_id"] for a in triage[:2]} == {disk["id"]}
        after_ack = summary(api, "hall-1")
        assert (after_ack["firing"], after_ack["firing_worst"], after_ack["open"]) == (2, "warning", 3)
        assert after_ack["units"] == [{"device_id": "hall-1", "open": 2, "firing": 1, "worst": "critical"}]

        # a silence created after the alert fired covers it now: not counted as firing, named in the list
        r = api.post(
            "/api/silences",
            json={"rule_id": disk["id"], "device_id": "door-1", "duration_s": 3600, "comment": "disk swap"},
            headers=operator,
        )
        assert r.status_code == 201, r.text
        silence = r.json()
        door_alert = alerts(api, unit="door-1")[0]
        assert door_alert["silenced_by"] == silence["id"]
        assert door_alert["silenced"] is False  # it fired before the silence: that record stays as it was
        assert api.get(f"/api/alerts/{door_alert['id']}").json()["silenced_by"] == silence["id"]
        assert summary(api)["firing"] == 1
        assert summary(api, "door-1")["units"] == [{"device_id": "door-1", "open": 1, "firing": 0, "worst": "warning"}]
        # by tag too
        r = api.post("/api/silences", json={"tag": "hall", "duration_s": 600}, headers=operator)
        assert r.status_code == 201, r.text
        assert summary(api) == {"firing": 0, "firing_worst": None, "open": 3, "units": []}
        assert all(a["silenced_by"] for a in alerts(api, state="open"))

        # a silence that ends uncovers them again
        assert api.delete(f"/api/silences/{silence['id']}", headers=operator).status_code == 200
        assert alerts(api, unit="door-1")[0]["silenced_by"] is None
        assert summary(api)["firing"] == 1
        # resolved alerts are history: never "silenced now"
        metrics(door, disk_percent=40.0)
        wait_alert(api, "resolved", unit="door-1", state="resolved")
        assert alerts(api, unit="door-1")[0]["silenced_by"] is None
        assert summary(api)["firing"] == 0

        viewer = {"Authorization": f"Bearer {token_for(stack, 'viewer', 'look')}"}
        assert summary(api, headers=viewer)["open"] == 2
        for bad in ("not a unit!", ",".join(f"u{i}" for i in range(1001))):
            r = api.get("/api/alerts/summary", params={"device_id": bad})
            assert r.status_code == 422 and "device_id" in r.text, r.text
        assert api.get("/api/alerts", params={"sort": "sideways"}).status_code == 422
        hall.stop_clean()
        door.stop_clean()
