"""`fleet up` killed with SIGKILL while units' samples stream in: right after the kill the rollups hold exactly the
raw samples that were committed (one transaction for both), and when the units send everything again after the
restart, each sample is counted once."""

from __future__ import annotations

import random
import signal
import threading

import pytest
from sqlalchemy import func, select

from fleet_service.db.engine import make_engine
from fleet_service.devices.models import MetricSample
from fleet_service.metrics.models import HOUR, MINUTE
from protocol.ids import now_ms
from tests.fleet_service.metrics.samples import brute_force, message, mismatches, random_samples, stored
from tests.support.faults import FleetUpProcess
from tests.support.services import wait_for
from tests.support.unit import RawUnit

UNITS = ("crash-a", "crash-b")
PER_UNIT = 1500


def stored_samples(url: str) -> list[dict]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(MetricSample.__table__)).mappings()]
    finally:
        engine.dispose()


def count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(MetricSample)).scalar_one()
    finally:
        engine.dispose()


def rollups_match(url: str, samples: list[dict]) -> list[str]:
    engine = make_engine(url)
    try:
        return [
            f"{t.name}: {m}"
            for t in (MINUTE, HOUR)
            for m in mismatches(stored(engine, t), brute_force(samples, t.width_ms))
        ]
    finally:
        engine.dispose()


def send(port: int, secrets: dict[str, str], samples: list[dict], qos: int) -> None:
    units = {u: RawUnit(port, u, s).connect() for u, s in secrets.items()}
    try:
        sent = []
        for s in samples:
            t, payload = message(s)
            sent.append(units[s["device_id"]].client.publish(t, payload, qos=qos))
        if qos:  # every one acknowledged by the broker before the units go
            for info in sent:
                info.wait_for_publish(30)
    finally:
        for unit in units.values():
            unit.kill()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_sigkill_between_batches_neither_loses_nor_doubles_rollups(tmp_path, db, request):
    env = {"FLEET_UNIT_MESSAGES_PER_S": "100000", "FLEET_UNIT_BYTES_PER_S": "1000000000"}
    if db == "postgres":
        env["FLEET_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    fleet = FleetUpProcess(tmp_path / "fleet", env=env).start()
    url = env.get("FLEET_DATABASE_URL", fleet.database_url)
    rng = random.Random(5)
    start = now_ms() - 6 * 3_600_000
    samples = [s for unit in UNITS for s in random_samples(rng, unit, start, PER_UNIT)]
    rng.shuffle(samples)
    try:
        with fleet.client() as api:
            secrets = {u: api.post("/api/devices", json={"id": u}).json()["secret"] for u in UNITS}
        sender = threading.Thread(target=send, args=(fleet.mqtt_port, secrets, samples, 0), daemon=True)
        sender.start()
        wait_for(lambda: count(url) > 300, timeout=30, interval=0.01, what="the first batches committed")
        fleet.kill(signal.SIGKILL)  # while units are still sending and ingest is writing
        sender.join(30)

        committed = stored_samples(url)
        assert 0 < len(committed) < len(samples)
        assert rollups_match(url, committed) == []  # no rollup without its raw row, no raw row without its rollup

        fleet.start()
        send(fleet.mqtt_port, secrets, samples, qos=1)  # everything again: what was stored, what was lost, the rest
        wait_for(lambda: count(url) == len(samples), timeout=60, interval=0.5, what="every sample stored")
    finally:
        fleet.stop()
    assert rollups_match(url, samples) == []  # the samples stored before the kill and sent again: counted once
