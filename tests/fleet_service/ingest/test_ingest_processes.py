"""FLEET_INGEST_PROCESSES=2: batches are decoded and written in worker processes, a unit's messages always in the
same one. Real Mosquitto (the service's $share subscriptions), real PostgreSQL, units speaking paho.

Counted: every log record sent is stored once, in the order its unit sent it; the workers' counters reach the
service's /metrics; a worker killed with SIGKILL mid-stream is replaced and nothing is lost or doubled.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
from sqlalchemy import text

from fleet_service.db.engine import make_engine
from protocol.ids import now_ms
from protocol.topics import Kind
from tests.fleet_service.conftest import Fleet
from tests.support.managed_mosquitto import settings_overrides, start_managed_mosquitto
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for
from tests.support.unit import RawUnit

UNITS = 6
PER_UNIT = 150


@pytest.fixture
def fleet(tmp_path, mosquitto_factory, postgres_url):
    overrides = {"database_url": postgres_url, "ingest_processes": 2, **settings_overrides(tmp_path / "mq")}
    settings = settings_for(tmp_path, **overrides)
    managed = start_managed_mosquitto(tmp_path, mosquitto_factory, settings)
    with StackThread(settings) as stack:
        wait_for(lambda: stack.ctx.link.connected.is_set(), timeout=30, what="service connected to the broker")
        with stack.client() as api:
            yield Fleet(stack, api, managed.unit_port, managed)


def _send(unit: RawUnit, first: int, last: int) -> None:
    for n in range(first, last):
        record = {"id": f"{unit.device_id}-{n:05d}", "ts": now_ms(), "level": "info", "source": "t", "msg": f"#{n}"}
        unit.publish(Kind.LOGS, {"v": 1, "records": [record]})


def _stored(postgres_url: str) -> dict[str, list[str]]:
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT device_id, rec_id FROM log_record ORDER BY id")).all()
    finally:
        engine.dispose()
    out: dict[str, list[str]] = {}
    for device_id, rec_id in rows:
        out.setdefault(device_id, []).append(rec_id)
    return out


def _metric(fleet, name: str, **labels: str) -> float:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in fleet.api.get("/metrics").text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def _units(fleet) -> list[RawUnit]:
    units = []
    for i in range(UNITS):
        device_id = f"proc-unit-{i}"
        unit = RawUnit(fleet.mqtt_port, device_id, fleet.enroll(device_id)).connect()
        unit.birth()
        units.append(unit)
    wait_for(lambda: all(fleet.status(u.device_id)["online"] for u in units), timeout=20, what="units online")
    return units


def _expected(units: list[RawUnit], count: int) -> dict[str, list[str]]:
    return {u.device_id: [f"{u.device_id}-{n:05d}" for n in range(count)] for u in units}


def test_two_ingest_processes_store_everything_once_in_each_units_order(fleet, postgres_url):
    units = _units(fleet)
    senders = [threading.Thread(target=_send, args=(u, 0, PER_UNIT)) for u in units]
    for t in senders:
        t.start()
    for t in senders:
        t.join(60)
    expected = _expected(units, PER_UNIT)
    wait_for(lambda: _stored(postgres_url) == expected, timeout=60, what="every record stored, in order, once")
    pids = fleet.stack.ctx.ingest.processes.pids()
    assert len(pids) == 2 and os.getpid() not in pids
    # the workers' counts reach the service's own /metrics
    assert _metric(fleet, "fleet_ingest_persisted_total", kind="logs") == UNITS * PER_UNIT
    for u in units:
        u.stop_clean()


def test_a_killed_ingest_process_is_replaced_and_nothing_is_lost_or_doubled(fleet, postgres_url):
    units = _units(fleet)
    half = PER_UNIT // 2
    senders = [threading.Thread(target=_send, args=(u, 0, half)) for u in units]
    for t in senders:
        t.start()
    wait_for(lambda: sum(map(len, _stored(postgres_url).values())) > 20, timeout=30, what="the first records stored")
    victim = fleet.stack.ctx.ingest.processes.pids()[0]
    os.kill(victim, signal.SIGKILL)
    for t in senders:
        t.join(60)
    senders = [threading.Thread(target=_send, args=(u, half, PER_UNIT)) for u in units]
    for t in senders:
        t.start()
    for t in senders:
        t.join(60)
    expected = _expected(units, PER_UNIT)
    wait_for(lambda: _stored(postgres_url) == expected, timeout=60, what="every record stored, in order, once")
    assert victim not in fleet.stack.ctx.ingest.processes.pids()
    assert _metric(fleet, "fleet_ingest_worker_restarts_total") >= 1
    for u in units:
        u.stop_clean()
