"""command_failed and rollout_failed rules: a command that ended failed, a rollout that aborted, fire an alert that
resolves when the next command (rollout) of that name succeeds (completes). Units answer over the real broker."""

from __future__ import annotations

import time
from typing import Any

from tests.fleet_service.alerts.support import alerts, create_rule, fast_settings, only_rule, wait_alert
from tests.fleet_service.control_support import Responder, fail, succeed
from tests.support.services import wait_for
from tests.support.stack import StackThread


class Switchable:
    """A command policy a test changes while the unit runs."""

    def __init__(self, policy=fail) -> None:
        self.policy = policy

    def __call__(self, cmd: dict[str, Any]):
        return self.policy(cmd)


def start(stack: StackThread, api, device_id: str, policy, **body) -> Responder:
    secret = api.post("/api/devices", json={"id": device_id, **body}).json()["secret"]
    unit = Responder(stack.mqtt_port, device_id, secret, policy).start()
    wait_for(lambda: api.get(f"/api/devices/{device_id}/status").json()["online"], what=f"{device_id} online")
    return unit


def command(api, device_id: str, name: str) -> dict:
    args = {"ref": "v3.0.0"} if name == "update" else {}
    r = api.post(f"/api/devices/{device_id}/commands", json={"name": name, "args": args})
    assert r.status_code in (200, 201, 202), r.text
    return r.json()


def ended(api, device_id: str, cmd_id: str) -> dict:
    return wait_for(
        lambda: (c := api.get(f"/api/commands/{cmd_id}").json())["status"] in ("succeeded", "failed") and c,
        what=f"{device_id}'s command ended",
    )


def test_a_failed_command_fires_in_scope_and_the_next_success_of_that_name_resolves_it(tmp_path):
    with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        only_rule(api, set())
        rule = create_rule(api, name="update failed", kind="command_failed", field="update", tag="hall")
        hall, yard = Switchable(), Switchable()
        units = [start(stack, api, "hall-1", hall, tags=["hall"]), start(stack, api, "yard-1", yard)]
        try:
            ping = command(api, "hall-1", "ping")  # fails too, but the rule is about `update`
            ended(api, "hall-1", ping["id"])
            time.sleep(1)
            assert alerts(api) == []
            failed = command(api, "hall-1", "update")
            command(api, "yard-1", "update")  # out of the rule's scope
            alert = wait_alert(api, "command alert", rule=rule["id"])
            assert alert["device_id"] == "hall-1" and alert["kind"] == "command_failed"
            assert alert["value"]["command_id"] == failed["id"] and alert["value"]["name"] == "update"
            assert alert["value"]["state"] == "failed" and alert["value"]["exit_code"] == 3
            assert "rolled back" in alert["value"]["output"]
            time.sleep(1)
            assert len(alerts(api)) == 1  # yard-1's failure is out of scope

            # An event-like alert can be acknowledged; it stays open until the command works again.
            assert api.post(f"/api/alerts/{alert['id']}/ack").status_code == 200
            hall.policy = succeed
            ended(api, "hall-1", command(api, "hall-1", "ping")["id"])  # another name: changes nothing
            time.sleep(1)
            assert alerts(api)[0]["state"] == "acknowledged"
            ended(api, "hall-1", command(api, "hall-1", "update")["id"])
            resolved = wait_alert(api, "command alert resolved", rule=rule["id"], state="resolved")
            assert resolved["resolved_by"] == "auto" and len(alerts(api)) == 1
        finally:
            for unit in units:
                unit.stop()


def test_an_aborted_rollout_fires_one_alert_resolved_by_the_next_rollout_of_that_command(tmp_path):
    with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        only_rule(api, set())
        rule = create_rule(api, name="rollout aborted", kind="rollout_failed")
        elsewhere = create_rule(api, name="other units", kind="rollout_failed", tag="elsewhere")
        policy = Switchable()
        units = [start(stack, api, f"ro-{i}", policy, tags=["stage"]) for i in range(2)]
        try:
            body = {
                "name": "recorder 3",
                "command": "update",
                "args": {"ref": "v3.0.0"},
                "tag": "stage",
                "batch_size": 1,
                "abort_threshold": 0,
            }
            r = api.post("/api/rollouts", json=body)
            assert r.status_code == 201, r.text
            rollout_id = r.json()["id"]
            alert = wait_alert(api, "rollout alert", rule=rule["id"])
            assert api.get(f"/api/rollouts/{rollout_id}").json()["state"] == "aborted"
            assert alert["device_id"] == "rollout:update" and alert["kind"] == "rollout_failed"
            assert alert["value"]["rollout_id"] == rollout_id and alert["value"]["state"] == "aborted"
            assert alert["value"]["name"] == "recorder 3" and "threshold" in alert["value"]["reason"]
            time.sleep(1)
            assert alerts(api, rule=elsewhere["id"]) == []  # it touched no unit tagged `elsewhere`
            assert len(alerts(api)) == 1

            policy.policy = succeed
            r = api.post("/api/rollouts", json={**body, "name": "recorder 3 again"})
            assert r.status_code == 201, r.text
            resolved = wait_alert(api, "rollout alert resolved", rule=rule["id"], state="resolved")
            assert resolved["resolved_by"] == "auto"
            assert api.get(f"/api/rollouts/{r.json()['id']}").json()["state"] == "completed"
        finally:
            for unit in units:
                unit.stop()
