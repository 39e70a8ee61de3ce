"""Alert rules evaluated against a real service and a hand-driven unit over the real (embedded) broker."""

from __future__ import annotations

import time
from datetime import datetime

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.fleet_service.alerts.support import (
    alerts,
    editable,
    fast_settings,
    metrics,
    online_unit,
    only_rule,
    rules_by_builtin,
    wait_alert,
)
from tests.fleet_service.control_support import SseReader
from tests.support.auth import token_for
from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN, StackThread
from tests.support.unit import RawUnit


def iso_ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


HEALTHY = {"disk_percent": 40.0, "temp_c": 50.0, "services": {"recorder": "active"}}


def shorten(api, rule: dict, **changes) -> dict:
    r = api.put(f"/api/alert-rules/{rule['id']}", json={**editable(rule), "for_s": 0.3, **changes})
    assert r.status_code == 200, r.text
    return r.json()


def test_each_builtin_rule_fires_one_alert_and_resolves_when_the_unit_recovers(fleet):
    api = fleet.api
    builtins = rules_by_builtin(api)
    assert set(builtins) == {"offline", "disk", "temperature", "service", "config_sync"}
    assert builtins["offline"]["severity"] == "critical" and builtins["offline"]["for_s"] == 120
    assert builtins["disk"]["threshold"] == 90 and builtins["disk"]["for_s"] == 300
    assert builtins["temperature"]["threshold"] == 85 and builtins["temperature"]["for_s"] == 120
    assert builtins["service"]["for_s"] == 60 and builtins["config_sync"]["for_s"] == 600
    for rule in builtins.values():
        shorten(api, rule)
    secret = fleet.enroll("alert-1")
    unit = RawUnit(fleet.mqtt_port, "alert-1", secret).connect()
    unit.birth()
    wait_for(lambda: fleet.status("alert-1")["online"], what="online")
    metrics(unit, **HEALTHY)
    time.sleep(1)
    assert alerts(api) == []

    metrics(unit, disk_percent=95.5, temp_c=91.0, services={"recorder": "failed", "uploader": "active"})
    for name in ("disk", "temperature", "service"):
        alert = wait_alert(api, f"{name} alert", rule=builtins[name]["id"])
        assert alert["state"] == "firing" and alert["device_id"] == "alert-1"
        assert alert["severity"] == builtins[name]["severity"] and alert["fired_at"]
    assert alerts(api, rule=builtins["disk"]["id"])[0]["value"] == 95.5
    assert alerts(api, rule=builtins["service"]["id"])[0]["value"] == {"recorder": "failed"}
    time.sleep(1)  # a later sample with the same values changes nothing
    metrics(unit, disk_percent=96.0, temp_c=92.0, services={"recorder": "failed"})
    time.sleep(1)
    assert len(alerts(api)) == 3

    metrics(unit, **HEALTHY)
    wait_for(lambda: all(a["state"] == "resolved" for a in alerts(api)), timeout=15, what="all resolved")
    assert len(alerts(api)) == 3 and all(a["resolved_by"] == "auto" for a in alerts(api))

    # configuration out of sync: a desired config the unit does not apply
    assert api.put("/api/devices/alert-1/config", json={"log_level": "debug"}).status_code == 200
    sync = wait_alert(api, "config alert", rule=builtins["config_sync"]["id"])
    assert sync["value"] == {"desired_version": 1, "reported_version": 0, "status": None}
    report = {"v": 1, "version": 1, "status": "applied", "config": {"log_level": "debug"}, "ack_id": "a1"}
    unit.publish(Kind.CONFIG_REPORTED, report)
    wait_alert(api, "config resolved", rule=builtins["config_sync"]["id"], state="resolved")

    # offline: the connection drops, the broker sends the Will
    unit.kill()
    offline = wait_alert(api, "offline alert", rule=builtins["offline"]["id"])
    assert offline["severity"] == "critical" and offline["state"] == "firing"
    again = RawUnit(fleet.mqtt_port, "alert-1", secret).connect()
    again.birth()
    wait_alert(api, "offline resolved", rule=builtins["offline"]["id"], state="resolved")
    assert len(alerts(api, unit="alert-1")) == 5  # one per rule, each resolved once
    assert alerts(api, state="open") == []
    again.stop_clean()


def test_a_value_flapping_inside_the_hysteresis_band_gives_one_alert(tmp_path):
    with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        only_rule(api, {"temperature"})
        rule = shorten(api, rules_by_builtin(api)["temperature"], clear_threshold=80, clear_for_s=0.5)
        unit = online_unit(stack, api, "flappy")
        metrics(unit, temp_c=86.0)
        wait_alert(api, "temperature alert", rule=rule["id"])
        for value in (84.0, 86.5, 83.0, 88.0, 81.0, 85.5, 84.0):  # around the line, never below the clear line
            metrics(unit, temp_c=value)
            time.sleep(0.4)
        metrics(unit, temp_c=79.0)  # below the clear line, but not for long enough
        time.sleep(0.2)
        metrics(unit, temp_c=86.0)
        time.sleep(0.8)
        assert [a["state"] for a in alerts(api)] == ["firing"]
        metrics(unit, temp_c=60.0)
        wait_alert(api, "resolved", rule=rule["id"], state="resolved")
        assert len(alerts(api)) == 1
        unit.stop_clean()


def test_acknowledge_records_who_and_when_and_is_streamed(tmp_path):
    with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        only_rule(api, {"disk"})
        rule = shorten(api, rules_by_builtin(api)["disk"])
        unit = online_unit(stack, api, "acked")
        with SseReader(stack.url, ADMIN_TOKEN) as sse:
            metrics(unit, disk_percent=97.0)
            alert = wait_alert(api, "disk alert", rule=rule["id"])
            sse.wait_for(lambda e: e["event"] == "alert" and e["data"]["state"] == "firing", what="alert event")
            viewer = {"Authorization": f"Bearer {token_for(stack, 'viewer', 'v')}"}
            operator = {"Authorization": f"Bearer {token_for(stack, 'operator', 'night-shift')}"}
            assert api.post(f"/api/alerts/{alert['id']}/ack", headers=viewer).status_code == 403
            before = now_ms()
            r = api.post(f"/api/alerts/{alert['id']}/ack", headers=operator)
            assert r.status_code == 200, r.text
            acked = r.json()
            assert acked["state"] == "acknowledged" and acked["acknowledged_by"] == "token:night-shift"
            assert before <= iso_ms(acked["acknowledged_at"]) <= now_ms()
            assert api.post(f"/api/alerts/{alert['id']}/ack", headers=operator).status_code == 409
            assert api.post("/api/alerts/999999/ack", headers=operator).status_code == 404
            sse.wait_for(lambda e: e["event"] == "alert" and e["data"]["state"] == "acknowledged", what="ack event")
            metrics(unit, disk_percent=50.0)
            wait_alert(api, "resolved", rule=rule["id"], state="resolved")
            detail = api.get(f"/api/alerts/{alert['id']}").json()
            assert [e["type"] for e in detail["events"]] == ["fired", "acknowledged", "resolved"]
            assert detail["events"][1]["actor"] == "token:night-shift"
            assert detail["acknowledged_by"] == "token:night-shift" and detail["resolved_by"] == "auto"
        unit.stop_clean()


def test_a_silenced_units_alert_is_recorded_as_silenced(tmp_path):
    with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        only_rule(api, {"temperature"})
        rule = shorten(api, rules_by_builtin(api)["temperature"])
        operator = {"Authorization": f"Bearer {token_for(stack, 'operator', 'maint')}"}
        viewer = {"Authorization": f"Bearer {token_for(stack, 'viewer', 'look')}"}
        body = {"tag": "hall-b", "duration_s": 3600, "comment": "maintenance in hall B"}
        assert api.post("/api/silences", json=body, headers=viewer).status_code == 403
        assert api.post("/api/silences", json={"comment": "matches everything"}, headers=operator).status_code == 422
        r = api.post("/api/silences", json=body, headers=operator)
        assert r.status_code == 201, r.text
        silence = r.json()
        assert silence["created_by"] == "token:maint" and silence["active"]
        quiet = online_unit(stack, api, "quiet", tags=["hall-b"])
        loud = online_unit(stack, api, "loud", tags=["hall-a"])
        metrics(quiet, temp_c=95.0)
        metrics(loud, temp_c=95.0)
        silenced = wait_alert(api, "silenced alert", unit="quiet")
        assert silenced["silenced"] is True and silenced["silence_id"] == silence["id"]
        assert wait_alert(api, "loud alert", unit="loud")["silenced"] is False
        assert [a["device_id"] for a in alerts(api, tag="hall-b")] == ["quiet"]
        assert len(alerts(api, rule=rule["id"], severity="warning")) == 2
        assert api.get("/api/silences").json()["items"][0]["id"] == silence["id"]
        ended = api.delete(f"/api/silences/{silence['id']}", headers=operator)
        assert ended.status_code == 200 and ended.json()["active"] is False
        assert api.get(f"/api/silences/{silence['id']}").json()["ends_at"] is not None
        assert api.get("/api/silences", params={"active": "true"}).json()["items"] == []
        quiet.stop_clean()
        loud.stop_clean()


def test_a_bad_rule_is_refused_and_nothing_is_stored(tmp_path):
    with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        before = api.get("/api/alert-rules").json()["items"]
        good = {"name": "fps low", "kind": "metric", "field": "fps", "op": "<", "threshold": 10, "for_s": 30}
        bad = [
            {**good, "kind": "nonsense"},
            {**good, "op": "=="},  # a metric compares with > or <
            {**good, "threshold": None},
            {**good, "clear_threshold": 5},  # below a "<" threshold: the clear line is on the wrong side
            {**good, "tag": "hall-a", "device_id": "u1"},  # one scope
            {**good, "tag": "bad tag!"},
            {**good, "severity": "panic"},
            {**good, "for_s": -1},
            {**good, "name": ""},
            {"name": "x", "kind": "extra", "field": "recording", "op": ">", "value": False},
            {"name": "x", "kind": "extra", "field": "", "op": "==", "value": False},
            {"name": "x", "kind": "offline", "for_s": 10, "threshold": 3},
        ]
        for body in bad:
            r = api.post("/api/alert-rules", json=body)
            assert r.status_code == 422, (body, r.text)
        assert api.get("/api/alert-rules").json()["items"] == before
        operator = {"Authorization": f"Bearer {token_for(stack, 'operator', 'op')}"}
        assert api.post("/api/alert-rules", json=good, headers=operator).status_code == 403
        created = api.post("/api/alert-rules", json=good)
        assert created.status_code == 201, created.text
        rule = created.json()
        assert rule["clear_threshold"] is None and rule["builtin"] is None and rule["enabled"] is True
        r = api.put(f"/api/alert-rules/{rule['id']}", json={**editable(rule), "op": "~"})
        assert r.status_code == 422
        assert api.get(f"/api/alert-rules/{rule['id']}").json() == rule
        extra = {"name": "not recording", "kind": "extra", "field": "recording", "op": "==", "value": False}
        assert api.post("/api/alert-rules", json=extra).status_code == 201
        assert api.delete(f"/api/alert-rules/{rule['id']}").status_code == 204
        assert api.get(f"/api/alert-rules/{rule['id']}").status_code == 404


def test_an_extra_value_rule_fires_on_equality(tmp_path):
    with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        only_rule(api, set())
        body = {"name": "not recording", "kind": "extra", "field": "recording", "op": "==", "value": False}
        rule = api.post("/api/alert-rules", json={**body, "for_s": 0.2, "severity": "critical"}).json()
        unit = online_unit(stack, api, "rec-1")
        metrics(unit, extra={"recording": True})
        time.sleep(0.8)
        assert alerts(api) == []
        metrics(unit, extra={"recording": False})
        alert = wait_alert(api, "not recording", rule=rule["id"])
        assert alert["value"] is False and alert["severity"] == "critical" and alert["rule_name"] == "not recording"
        metrics(unit, extra={"recording": True})
        wait_alert(api, "recording again", rule=rule["id"], state="resolved")
        unit.stop_clean()


def test_built_in_rules_an_admin_deleted_stay_deleted_after_a_restart(tmp_path):
    settings = fast_settings(tmp_path)
    with StackThread(settings) as stack, stack.client() as api:
        builtins = rules_by_builtin(api)
        assert api.delete(f"/api/alert-rules/{builtins['disk']['id']}").status_code == 204
        shorten(api, builtins["offline"], for_s=30)
    with StackThread(settings) as stack, stack.client() as api:
        after = rules_by_builtin(api)
        assert "disk" not in after and after["offline"]["for_s"] == 30
