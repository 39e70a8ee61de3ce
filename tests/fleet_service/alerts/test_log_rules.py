"""Log rules: a line matching a pattern more than K times in a window, counted from the stored lines of the unit
(a real service, a hand-driven unit over the real embedded broker)."""

from __future__ import annotations

import time

from tests.fleet_service.alerts.support import (
    alerts,
    create_rule,
    fast_settings,
    log_lines,
    online_unit,
    only_rule,
    wait_alert,
)
from tests.support.services import wait_for
from tests.support.stack import StackThread


def test_more_than_k_matching_lines_in_the_window_fire_one_alert_that_resolves_when_the_window_passes_quiet(
    tmp_path,
):
    with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        only_rule(api, set())
        rule = create_rule(
            api, name="disk errors", kind="log", level="warning", pattern="disk error", threshold=2, window_s=4
        )
        unit = online_unit(stack, api, "log-1")
        log_lines(unit, *[("info", "disk error on sda (just a notice)")] * 4)  # below the level
        log_lines(unit, *[("error", "fan stopped")] * 4)  # above the level, not matching
        log_lines(unit, ("warning", "disk error on sda"), ("critical", "disk error on sdb"))  # K lines: not more
        time.sleep(1.5)
        assert alerts(api) == []

        log_lines(unit, ("error", "disk error on sdc"))  # the K+1st
        alert = wait_alert(api, "log alert", rule=rule["id"])
        assert alert["device_id"] == "log-1" and alert["kind"] == "log" and alert["state"] == "firing"
        assert alert["value"]["count"] == 3 and alert["value"]["window_s"] == 4
        assert alert["value"]["sample"] == "disk error on sdc"  # the newest matching line
        log_lines(unit, ("error", "disk error on sdd"), ("error", "disk error on sde"))
        time.sleep(1)
        assert len(alerts(api)) == 1 and alerts(api)[0]["state"] == "firing"

        # No more lines: once the window holds K or fewer, the alert resolves by itself.
        resolved = wait_alert(api, "log alert resolved", rule=rule["id"], state="resolved")
        assert resolved["resolved_by"] == "auto"
        assert len(alerts(api)) == 1


def test_a_regex_rule_counts_the_lines_it_matches(tmp_path):
    with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        only_rule(api, set())
        rule = create_rule(
            api, name="hot", kind="log", pattern=r"temp(erature)? [0-9]{2,}C", regex=True, threshold=1, window_s=60
        )
        assert rule["regex"] is True and rule["level"] == "" and rule["pattern"] == r"temp(erature)? [0-9]{2,}C"
        unit = online_unit(stack, api, "log-2")
        log_lines(unit, ("info", "temp high"), ("info", "temperature 9C"), ("debug", "temp 91C"))
        time.sleep(1.5)
        assert alerts(api) == []
        log_lines(unit, ("info", "sensor: temperature 88C"))
        alert = wait_alert(api, "regex alert", rule=rule["id"])
        assert alert["value"]["count"] == 2 and alert["value"]["sample"] == "sensor: temperature 88C"


def test_a_bad_log_rule_is_refused_naming_the_field_and_nothing_is_stored(tmp_path):
    with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        before = api.get("/api/alert-rules").json()["items"]
        good = {"name": "errors", "kind": "log", "level": "error", "pattern": "oops", "threshold": 5, "window_s": 60}
        bad = {
            "pattern": {**good, "pattern": "(unclosed", "regex": True},
            "exponential": {**good, "pattern": "(a+)+$", "regex": True},
            "back": {**good, "pattern": r"(x)\1", "regex": True},
            "characters": {**good, "pattern": "x" * 201},
            "window_s": {**good, "window_s": None},
            "threshold": {**good, "threshold": 1.5},
            "level": {**good, "level": "loud"},
            "takes no op": {**good, "op": ">"},
            "takes no pattern": {"name": "x", "kind": "offline", "pattern": "oops"},
            "takes no regex": {"name": "x", "kind": "command_failed", "regex": True},
            "takes no threshold": {"name": "x", "kind": "rollout_failed", "threshold": 1},
        }
        for named, body in bad.items():
            r = api.post("/api/alert-rules", json=body)
            assert r.status_code == 422, (body, r.text)
            assert named in r.text, (named, r.text)
        assert api.get("/api/alert-rules").json()["items"] == before
        created = api.post("/api/alert-rules", json=good)
        assert created.status_code == 201, created.text
        wait_for(lambda: len(api.get("/api/alert-rules").json()["items"]) == len(before) + 1, what="one more rule")
