"""Random metric samples for the tier tests, the rollups a brute-force pass computes from them, and reading the
rollup tables back."""

from __future__ import annotations

import json
import math
import random
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from fleet_service.metrics.models import FIELDS, Tier
from protocol.topics import Kind, topic


def random_samples(rng: random.Random, unit: str, start: int, count: int, every_ms: int = 10_000) -> list[dict]:
    """`count` samples about `every_ms` apart from `start`; each field missing now and then."""
    out = []
    for i in range(count):
        sample: dict[str, Any] = {"device_id": unit, "ts": start + i * every_ms + rng.randrange(every_ms)}
        for field, whole in FIELDS.items():
            if rng.random() < 0.15:
                sample[field] = None
            elif whole:
                sample[field] = rng.randrange(0, 2**40)
            else:
                sample[field] = round(rng.uniform(0, 100), 3)
        out.append(sample)
    return out


def message(sample: dict) -> tuple[str, bytes]:
    """The MQTT topic and payload a unit sends for this sample."""
    body = {"v": 1, "ts": sample["ts"], "services": {}, "extra": {}}
    body |= {f: sample[f] for f in FIELDS if sample[f] is not None}
    return topic(sample["device_id"], Kind.METRICS), json.dumps(body).encode()


def brute_force(samples: list[dict], width_ms: int) -> dict[tuple[str, int], dict[str, Any]]:
    """What a tier must hold for these samples, each (unit, ts) counted once, computed the slow obvious way."""
    unique = {(s["device_id"], s["ts"]): s for s in samples}
    groups: dict[tuple[str, int], list[dict]] = {}
    for (unit, ts), s in unique.items():
        groups.setdefault((unit, ts - ts % width_ms), []).append(s)
    expected = {}
    for key, members in groups.items():
        latest = max(members, key=lambda s: s["ts"])
        row: dict[str, Any] = {"samples": len(members), "last_ts": latest["ts"]}
        for f in FIELDS:
            values = [s[f] for s in members if s[f] is not None]
            row[f"{f}_min"] = min(values) if values else None
            row[f"{f}_max"] = max(values) if values else None
            row[f"{f}_n"] = len(values)
            row[f"{f}_sum"] = float(sum(values))
            row[f"{f}_last"] = latest[f]
        expected[key] = row
    return expected


def stored(engine: Engine, tier: Tier) -> dict[tuple[str, int], dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(tier.table)).mappings().all()
    keys = ("device_id", "bucket")
    return {(r["device_id"], r["bucket"]): {k: v for k, v in r.items() if k not in keys} for r in rows}


def mismatches(actual: dict, expected: dict) -> list[str]:
    """Differences, sums compared to a relative 1e-9 (float addition depends on the order), the rest exactly."""
    problems = []
    if set(actual) != set(expected):
        problems.append(
            f"buckets differ: only stored {sorted(set(actual) - set(expected))[:5]}, "
            f"missing {sorted(set(expected) - set(actual))[:5]}"
        )
    for key in sorted(set(actual) & set(expected)):
        for column, want in expected[key].items():
            got = actual[key][column]
            same = math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-6) if column.endswith("_sum") else got == want
            if not same:
                problems.append(f"{key} {column}: stored {got!r}, expected {want!r}")
    return problems[:20]
