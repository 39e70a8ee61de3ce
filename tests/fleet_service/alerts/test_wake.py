"""The evaluator wakes for the units whose live events can change something, and only for those: a healthy
sample from a unit with nothing under way costs no evaluation; a breach is evaluated within the wake delay,
long before the timer's next full pass."""

from __future__ import annotations

import time

from fleet_service.alerts.evaluate import Rule
from fleet_service.alerts.wake import worth_waking
from tests.fleet_service.alerts.support import alerts, editable, fast_settings, metrics, online_unit, rules_by_builtin
from tests.support.services import wait_for
from tests.support.stack import StackThread

TEMP = Rule("t", "hot", "metric", "warning", None, None, "temp_c", ">", 85.0, 80.0, None, 0.0, 0.0)
SERVICE = Rule("s", "svc", "service", "warning", None, None, "", "", None, None, None, 0.0, 0.0)
RECORDING = Rule("r", "rec", "extra", "warning", "venue", None, "recording", "==", None, None, False, 0.0, 0.0)
RULES = [TEMP, SERVICE, RECORDING]
HEALTHY = {"temp_c": 50.0, "services": {"recorder": "active"}, "extra": {"recording": True}}


def test_a_healthy_sample_from_a_quiet_unit_is_not_worth_an_evaluation():
    assert not worth_waking("metrics", "u1", {"device_id": "u1", **HEALTHY}, RULES, set())
    assert not worth_waking("heartbeat", "u1", {"device_id": "u1", "seq": 3}, RULES, set())


def test_a_breach_under_any_rule_a_condition_under_way_or_a_presence_change_is():
    assert worth_waking("metrics", "u1", {**HEALTHY, "temp_c": 86.0}, RULES, set())
    assert worth_waking("metrics", "u1", {**HEALTHY, "services": {"recorder": "failed"}}, RULES, set())
    # scoped to a tag the event does not carry: woken anyway, the evaluation applies the scope
    assert worth_waking("metrics", "u1", {**HEALTHY, "extra": {"recording": False}}, RULES, set())
    # between the lines while firing, or healthy while pending/clearing: its condition must move
    assert worth_waking("metrics", "u1", {**HEALTHY, "temp_c": 82.0}, RULES, {"u1"})
    assert worth_waking("heartbeat", "u1", {"seq": 4}, RULES, {"u1"})
    assert worth_waking("presence", "u1", {"online": False}, RULES, set())
    assert worth_waking("config", "u1", {"change": "desired"}, RULES, set())
    assert not worth_waking("metrics", "u1", {**HEALTHY, "temp_c": 86.0}, [], set())


def test_a_breach_fires_within_the_wake_delay_and_healthy_samples_wake_nothing(tmp_path):
    settings = fast_settings(tmp_path, alert_eval_interval_s=60.0, alert_lease_s=120.0, alert_wake_delay_s=0.1)
    with StackThread(settings) as stack, stack.client() as api:
        rule = rules_by_builtin(api)["temperature"]
        r = api.put(f"/api/alert-rules/{rule['id']}", json={**editable(rule), "for_s": 0, "clear_for_s": 0})
        assert r.status_code == 200, r.text
        unit = online_unit(stack, api, "wake-1")
        evaluator = stack.ctx.alerts
        wait_for(lambda: evaluator.holding and evaluator._rules, what="the evaluator holds the lease")
        pokes: list[str] = []
        real_poke = evaluator.poke
        evaluator.poke = lambda device_id: (pokes.append(device_id), real_poke(device_id))
        for _ in range(5):
            metrics(unit, temp_c=50.0, disk_percent=40.0)
        stack.drain()
        time.sleep(0.5)
        assert pokes == [], "healthy samples from a unit with nothing under way woke the evaluator"

        started = time.monotonic()
        metrics(unit, temp_c=95.0)
        fired = wait_for(lambda: alerts(api, state="firing"), timeout=10, what="the alert fired")
        assert fired and time.monotonic() - started < 5, "fired by the timer, not by the wake-up"
        assert pokes.count("wake-1") >= 1

        metrics(unit, temp_c=50.0)
        wait_for(lambda: alerts(api, state="resolved"), timeout=5, what="resolved through the wake-up")


LOG = Rule("l", "errors", "log", "warning", None, None, "", "", 3.0, None, None, 0.0, 0.0, level="error")
FAILED = Rule("c", "update failed", "command_failed", "warning", None, None, "update", "", None, None, None, 0, 0)


def test_lines_and_commands_wake_only_for_the_rules_that_read_them():
    assert not worth_waking("log", "u1", {"level": "error"}, RULES, set())
    assert not worth_waking("log", "u1", {"level": "warning"}, [LOG], set())
    assert worth_waking("log", "u1", {"level": "critical"}, [LOG], set())
    assert not worth_waking("command", "u1", {"status": "running"}, [FAILED], set())
    assert not worth_waking("command", "u1", {"status": "failed"}, RULES, set())
    assert worth_waking("command", "u1", {"status": "failed"}, [FAILED], set())
    assert worth_waking("command", "u1", {"status": "succeeded"}, [FAILED], set())


def test_a_rule_enabled_later_fires_for_a_unit_already_over_its_line_without_a_new_sample(tmp_path):
    """A timer pass reads only the units with a condition under way; a rule change makes the next pass read
    every unit, so a unit that crossed the line before the rule existed fires without waiting for a full pass
    (here an hour away) or for its next sample."""
    settings = fast_settings(tmp_path, alert_eval_interval_s=0.2, alert_full_eval_interval_s=3600.0)
    with StackThread(settings) as stack, stack.client() as api:
        rule = rules_by_builtin(api)["temperature"]
        disabled = {**editable(rule), "for_s": 0, "clear_for_s": 0, "enabled": False}
        assert api.put(f"/api/alert-rules/{rule['id']}", json=disabled).status_code == 200
        unit = online_unit(stack, api, "late-1")
        metrics(unit, temp_c=97.0, disk_percent=40.0)
        stack.drain()
        time.sleep(1.0)  # several timer passes: nothing to fire, nothing under way
        assert alerts(api) == []
        assert api.put(f"/api/alert-rules/{rule['id']}", json={**disabled, "enabled": True}).status_code == 200
        fired = wait_for(lambda: alerts(api, state="firing"), timeout=5, what="the alert from the rule change")
        assert [(a["device_id"], a["value"]) for a in fired] == [("late-1", 97.0)]
