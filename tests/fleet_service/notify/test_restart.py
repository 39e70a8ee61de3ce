"""`fleet up` killed with SIGKILL while a notification waits in the outbox: after the restart it is delivered
exactly once (counted at a real receiver: sent, stored, lost, doubled)."""

from __future__ import annotations

import signal
import time

from tests.fleet_service.alerts.support import metrics
from tests.fleet_service.notify.conftest import FAST_NOTIFY
from tests.fleet_service.notify.support import hot_rule, outbox, tally, webhook
from tests.support.faults import FleetUpProcess
from tests.support.receiver import Receiver
from tests.support.services import wait_for
from tests.support.unit import RawUnit

PATIENT = {**FAST_NOTIFY, "FLEET_NOTIFY_MAX_ATTEMPTS": "1000", "FLEET_NOTIFY_RETRY_CAP_S": "0.5"}


def crossing_unit(fleet: FleetUpProcess, api, device_id: str) -> RawUnit:
    secret = api.post("/api/devices", json={"id": device_id}).json()["secret"]
    unit = RawUnit(fleet.mqtt_port, device_id, secret).connect()
    unit.birth()
    wait_for(lambda: api.get(f"/api/devices/{device_id}/status").json()["online"], what="online")
    metrics(unit, temp_c=92.0)
    return unit


def test_killed_while_the_group_gathers_it_is_sent_once_after_the_restart(tmp_path):
    fleet = FleetUpProcess(tmp_path / "fleet", env=PATIENT).start()
    try:
        with Receiver() as receiver:
            with fleet.client() as api:
                hot_rule(api)
                webhook(api, receiver, group_wait_s=4)
                unit = crossing_unit(fleet, api, "crash-1")
                wait_for(lambda: outbox(api, state="grouping"), timeout=15, what="the notification gathering")
            fleet.kill(signal.SIGKILL)
            unit.kill()
            assert receiver.received == []  # not due yet when the service died
            fleet.start()
            with fleet.client() as api:
                wait_for(lambda: receiver.received, timeout=20, what="the notification after the restart")
                time.sleep(2)
                counts = tally(receiver, api, expected=1)
                assert len(receiver.received) == 1
                assert (counts["lost"], counts["doubled"], counts["stored_delivered"]) == (0, 0, 1)
                assert [n["state"] for n in outbox(api)] == ["delivered"]
    finally:
        fleet.stop()


def test_killed_while_the_receiver_is_down_it_is_sent_once_when_both_are_back(tmp_path):
    receiver = Receiver()  # not started: its port refuses connections
    fleet = FleetUpProcess(tmp_path / "fleet", env=PATIENT).start()
    try:
        with fleet.client() as api:
            hot_rule(api)
            webhook(api, receiver, group_wait_s=0)
            unit = crossing_unit(fleet, api, "crash-2")
            wait_for(
                lambda: [n for n in outbox(api, state="pending") if n["attempts"] >= 2],
                timeout=15,
                what="failed attempts",
            )
        fleet.kill(signal.SIGKILL)
        unit.kill()
        receiver.start()
        fleet.start()
        with fleet.client() as api:
            wait_for(lambda: receiver.received, timeout=20, what="the notification after the restart")
            time.sleep(2)
            counts = tally(receiver, api, expected=1)
            assert len(receiver.received) == 1
            assert (counts["lost"], counts["doubled"], counts["stored_delivered"]) == (0, 0, 1)
            (row,) = outbox(api)
            assert row["state"] == "delivered" and row["attempts"] >= 3
            assert row["attempt_log"][-1]["ok"] and not any(a["ok"] for a in row["attempt_log"][:-1])
    finally:
        receiver.stop()
        fleet.stop()
