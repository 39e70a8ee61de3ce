"""Two service replicas on one Mosquitto (`$share` ingest) and one PostgreSQL: one evaluator, one alert."""

from __future__ import annotations

import time

from tests.fleet_service.alerts.support import (
    FAST,
    alerts,
    create_rule,
    editable,
    log_lines,
    metrics,
    only_rule,
    rules_by_builtin,
    wait_alert,
)
from tests.fleet_service.control_support import SseReader
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto
from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN, StackThread, settings_for
from tests.support.unit import RawUnit


def test_two_evaluators_give_one_alert_and_it_streams_on_both(tmp_path, mosquitto_factory, postgres_url):
    base = {"database_url": postgres_url, **settings_overrides(tmp_path / "mosquitto-files"), **FAST}
    settings_a = settings_for(tmp_path / "a", replica_id="replica-a", **base)
    settings_b = settings_for(tmp_path / "b", replica_id="replica-b", **base)
    managed = start_managed_mosquitto(tmp_path, mosquitto_factory, settings_a)
    with StackThread(settings_a) as a, StackThread(settings_b) as b, a.client() as api_a, b.client() as api_b:
        wait_for(lambda: a.ctx.link.connected.is_set() and b.ctx.link.connected.is_set(), what="both connected")
        only_rule(api_a, {"temperature"})
        rule = rules_by_builtin(api_a)["temperature"]
        api_a.put(f"/api/alert-rules/{rule['id']}", json={**editable(rule), "for_s": 0.5, "clear_threshold": 80})
        with SseReader(a.url, ADMIN_TOKEN) as sse_a, SseReader(b.url, ADMIN_TOKEN) as sse_b:
            secret = api_a.post("/api/devices", json={"id": "twin-1"}).json()["secret"]
            wait_for(lambda: accepts(managed.unit_port, "twin-1", secret) == 0, what="unit accepted")
            unit = RawUnit(managed.unit_port, "twin-1", secret).connect()
            unit.birth()
            wait_for(lambda: api_b.get("/api/devices/twin-1/status").json()["online"], what="online")
            for _ in range(10):  # `$share` deals the samples to both replicas
                metrics(unit, temp_c=90.0)
                time.sleep(0.15)
            for sse in (sse_a, sse_b):
                sse.wait_for(lambda e: e["event"] == "alert" and e["data"]["state"] == "firing", what="alert event")
            time.sleep(1.5)
            assert len(alerts(api_a)) == 1 and alerts(api_b) == alerts(api_a)
            fired = [e for e in sse_a.snapshot() if e["event"] == "alert" and e["data"]["state"] == "firing"]
            assert len(fired) == 1
            holders = {a.ctx.alerts.holding, b.ctx.alerts.holding}
            assert holders == {True, False}
            for _ in range(4):
                metrics(unit, temp_c=50.0)
                time.sleep(0.15)
            wait_for(lambda: alerts(api_b)[0]["state"] == "resolved", timeout=15, what="resolved")
            unit.stop_clean()


def test_a_log_rule_counts_the_lines_both_replicas_ingested_and_fires_once(tmp_path, mosquitto_factory, postgres_url):
    base = {"database_url": postgres_url, **settings_overrides(tmp_path / "mosquitto-files"), **FAST}
    settings_a = settings_for(tmp_path / "a", replica_id="replica-a", **base)
    settings_b = settings_for(tmp_path / "b", replica_id="replica-b", **base)
    managed = start_managed_mosquitto(tmp_path, mosquitto_factory, settings_a)
    with StackThread(settings_a) as a, StackThread(settings_b) as b, a.client() as api_a, b.client() as api_b:
        wait_for(lambda: a.ctx.link.connected.is_set() and b.ctx.link.connected.is_set(), what="both connected")
        only_rule(api_a, set())
        rule = create_rule(
            api_a, name="recorder errors", kind="log", level="error", pattern="encoder", threshold=9, window_s=120
        )
        secret = api_a.post("/api/devices", json={"id": "twin-2"}).json()["secret"]
        wait_for(lambda: accepts(managed.unit_port, "twin-2", secret) == 0, what="unit accepted")
        unit = RawUnit(managed.unit_port, "twin-2", secret).connect()
        unit.birth()
        wait_for(lambda: api_b.get("/api/devices/twin-2/status").json()["online"], what="online")

        def ingested(stack: StackThread) -> float:
            return stack.ctx.registry.value("fleet_ingest_persisted_total", kind="logs")

        for i in range(10):  # one line per message: `$share` deals them to both replicas
            log_lines(unit, ("error", f"encoder stalled ({i})"))
            time.sleep(0.1)
        wait_for(lambda: ingested(a) + ingested(b) == 10, what="10 batches stored")
        assert 0 < ingested(a) < 10 and 0 < ingested(b) < 10  # neither replica saw the unit's whole stream
        alert = wait_alert(api_b, "log alert", rule=rule["id"])
        assert alert["value"]["count"] == 10 and alert["value"]["sample"] == "encoder stalled (9)"
        time.sleep(1.5)
        assert len(alerts(api_a)) == 1 and alerts(api_b) == alerts(api_a)
        unit.stop_clean()
