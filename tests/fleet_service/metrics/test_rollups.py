"""Ingest folds each new sample into the per-minute and per-hour rollups as it stores it: whatever order samples
arrive in, however often one is delivered again and however the batches fall, the rollups equal a brute-force
computation over the distinct samples (SQLite and PostgreSQL)."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import func, select

from fleet_service.devices.enrollment import enroll
from fleet_service.devices.models import MetricSample
from fleet_service.ingest.badlog import BadMessageLog
from fleet_service.ingest.persister import Inbound, Persister
from fleet_service.metrics.models import FIELDS, HOUR, MINUTE
from fleet_service.prometheus import Registry
from protocol.ids import now_ms
from tests.fleet_service.metrics.samples import brute_force, message, mismatches, random_samples, stored

UNITS = ("tier-a", "tier-b", "tier-c")


def persister(engine) -> Persister:
    registry = Registry()
    return Persister(engine, registry, BadMessageLog(registry))


def deliver(p: Persister, samples: list[dict], rng: random.Random, received: int) -> None:
    """In random batches of 1 to 60 messages, as ingest would take them off its queue."""
    i = 0
    while i < len(samples):
        size = rng.randint(1, 60)
        batch = [Inbound(*message(s), received_ms=received) for s in samples[i : i + size]]
        p.persist(batch)
        i += size


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollups_equal_a_brute_force_pass_over_out_of_order_and_redelivered_samples(engine, seed):
    rng = random.Random(seed)
    for unit in UNITS:
        enroll(engine, unit)
    now = now_ms()
    start = now - 4 * 3_600_000 - rng.randrange(1_800_000)  # 3.3 hours of samples, in the past: tiers split
    samples = [s for unit in UNITS for s in random_samples(rng, unit, start, 1200)]
    # Delivered in a random order (a unit's outbox flushing late samples after newer ones), a quarter of them twice.
    again = rng.sample(samples, len(samples) // 4)
    arrivals = samples + again
    rng.shuffle(arrivals)
    p = persister(engine)
    deliver(p, arrivals, rng, now)
    deliver(p, arrivals[:500], rng, now)  # a stretch delivered all over again (a replica re-reading its queue)

    with engine.connect() as conn:
        raw = conn.execute(select(func.count()).select_from(MetricSample)).scalar_one()
    assert raw == len(samples)
    for tier in (MINUTE, HOUR):
        assert mismatches(stored(engine, tier), brute_force(samples, tier.width_ms)) == [], tier.name


def test_a_late_sample_does_not_replace_the_last_value_of_a_newer_one(engine):
    enroll(engine, "late-1")
    p = persister(engine)
    minute = now_ms() // 60_000 * 60_000 - 600_000
    newer = {"device_id": "late-1", "ts": minute + 50_000, "cpu_percent": 80.0}
    older = {"device_id": "late-1", "ts": minute + 10_000, "cpu_percent": 20.0}
    for s in (newer, older):
        p.persist([Inbound(*message({**dict.fromkeys(FIELDS), **s}), received_ms=now_ms())])
    row = stored(engine, MINUTE)[("late-1", minute)]
    assert (row["cpu_percent_last"], row["last_ts"], row["samples"]) == (80.0, minute + 50_000, 2)
    assert (row["cpu_percent_min"], row["cpu_percent_max"], row["cpu_percent_sum"]) == (20.0, 80.0, 100.0)
