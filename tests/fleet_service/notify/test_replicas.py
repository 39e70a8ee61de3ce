"""Two service replicas on one Mosquitto (`$share` ingest) and one PostgreSQL, both running the notifier: one
dispatches, either may deliver, and the receiver gets each notification exactly once."""

from __future__ import annotations

import time

from tests.fleet_service.alerts.support import FAST, alerts, metrics
from tests.fleet_service.notify.support import hot_rule, outbox, tally, webhook
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto
from tests.support.receiver import Receiver
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for
from tests.support.unit import RawUnit

QUICK = {"notify_interval_s": 0.1, "notify_lease_s": 3.0}


def test_two_replicas_deliver_each_notification_once(tmp_path, mosquitto_factory, postgres_url):
    base = {"database_url": postgres_url, **settings_overrides(tmp_path / "mosquitto-files"), **FAST, **QUICK}
    settings_a = settings_for(tmp_path / "a", replica_id="replica-a", **base)
    settings_b = settings_for(tmp_path / "b", replica_id="replica-b", **base)
    managed = start_managed_mosquitto(tmp_path, mosquitto_factory, settings_a)
    with Receiver() as receiver, StackThread(settings_a) as a, StackThread(settings_b) as b:
        with a.client() as api_a, b.client() as api_b:
            wait_for(lambda: a.ctx.link.connected.is_set() and b.ctx.link.connected.is_set(), what="both connected")
            hot_rule(api_a)
            channel = webhook(api_b, receiver, group_wait_s=0)
            units = []
            for i in range(3):
                secret = api_a.post("/api/devices", json={"id": f"twin-{i}"}).json()["secret"]
                wait_for(lambda s=secret, i=i: accepts(managed.unit_port, f"twin-{i}", s) == 0, what="accepted")
                unit = RawUnit(managed.unit_port, f"twin-{i}", secret).connect()
                unit.birth()
                units.append(unit)
            wait_for(lambda: all(api_b.get(f"/api/devices/twin-{i}/status").json()["online"] for i in range(3)))
            for _ in range(6):  # `$share` deals the samples to both replicas
                for unit in units:
                    metrics(unit, temp_c=90.0)
                time.sleep(0.15)
            wait_for(lambda: len(alerts(api_a)) == 3, timeout=15, what="three alerts")
            wait_for(lambda: len(receiver.accepted()) >= 3, timeout=15, what="three notifications")
            for _ in range(4):
                for unit in units:
                    metrics(unit, temp_c=50.0)
                time.sleep(0.15)
            wait_for(lambda: len(receiver.accepted()) >= 6, timeout=20, what="three resolved notifications")
            time.sleep(2)
            counts = tally(receiver, api_a, expected=6)
            assert (counts["accepted"], counts["lost"], counts["doubled"], counts["stored_delivered"]) == (6, 0, 0, 6)
            bodies = [r.json() for r in receiver.accepted()]
            assert sorted((b["status"], b["alerts"][0]["device_id"]) for b in bodies) == sorted(
                (s, f"twin-{i}") for s in ("firing", "resolved") for i in range(3)
            )
            assert all(r.signed_by(channel["secret"]) for r in receiver.accepted())
            assert {a.ctx.notifier.holding, b.ctx.notifier.holding} == {True, False}
            assert outbox(api_b) == outbox(api_a)
            for unit in units:
                unit.stop_clean()
