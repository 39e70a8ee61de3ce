"""Storing a batch of samples: the raw rows, and the rollup buckets they fall in, in the caller's transaction.

A sample is keyed by (device_id, ts): inserting it again does nothing, and only samples whose raw row was
actually inserted are folded into the rollups (the insert returns them). So a sample delivered twice, or a batch
written again after a crash, is counted once, as long as its raw row is still kept (the raw retention window).
Each batch folds its new samples per bucket in Python, then one upsert per tier merges them into the stored
bucket: min and max, sums and counts added, and `_last` taken from whichever side has the greater `ts` — so a
unit's late samples never overwrite a newer value.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import case, or_
from sqlalchemy.orm import Session

from fleet_service.db.bulk import execute_rows, insert_rows
from fleet_service.db.core import table_of
from fleet_service.devices.models import MetricSample
from fleet_service.metrics.models import FIELDS, ROLLUPS, Tier

Sample = dict[str, Any]  # a metric_sample row as ingest builds it


def store(session: Session, samples: list[Sample]) -> int:
    """Insert the samples not stored yet and fold exactly those into every tier; returns how many were new."""
    if not samples:
        return 0
    unique: dict[tuple[str, int], Sample] = {}
    for s in samples:
        unique.setdefault((s["device_id"], s["ts"]), s)
    rows = [unique[k] for k in sorted(unique)]  # one order for every writer: no lock-order deadlocks
    dialect = session.get_bind().dialect.name
    inserted = {(r.device_id, r.ts) for r in execute_rows(session, _insert_new(dialect), rows)}
    fresh = [unique[k] for k in sorted(inserted)]
    for tier in ROLLUPS:
        buckets = fold(fresh, tier.width_ms)
        if buckets:
            execute_rows(session, _upsert(dialect, tier), [buckets[k] for k in sorted(buckets)])
    return len(fresh)


def fold(samples: Iterable[Sample], width_ms: int) -> dict[tuple[str, int], dict[str, Any]]:
    """Rollup rows, one per (unit, bucket), of these samples alone."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for s in samples:
        ts = s["ts"]
        key = (s["device_id"], ts - ts % width_ms)
        row = out.get(key)
        if row is None:
            row = out[key] = _empty(*key)
        row["samples"] += 1
        newest = ts > row["last_ts"]
        if newest:
            row["last_ts"] = ts
        for f in FIELDS:
            value = s.get(f)
            if newest:
                row[f"{f}_last"] = value
            if value is None:
                continue
            if row[f"{f}_min"] is None or value < row[f"{f}_min"]:
                row[f"{f}_min"] = value
            if row[f"{f}_max"] is None or value > row[f"{f}_max"]:
                row[f"{f}_max"] = value
            row[f"{f}_sum"] += value
            row[f"{f}_n"] += 1
    return out


def _empty(device_id: str, bucket: int) -> dict[str, Any]:
    row: dict[str, Any] = {"device_id": device_id, "bucket": bucket, "samples": 0, "last_ts": -1}
    for f in FIELDS:
        row |= {f"{f}_min": None, f"{f}_max": None, f"{f}_sum": 0.0, f"{f}_n": 0, f"{f}_last": None}
    return row


@lru_cache(maxsize=4)
def _insert_new(dialect: str):
    table = table_of(MetricSample)
    names = ["device_id", "ts", "received_at", *FIELDS, "services", "extra"]
    stmt = insert_rows(dialect, table, names).on_conflict_do_nothing(index_elements=["device_id", "ts"])
    return stmt.returning(table.c.device_id, table.c.ts)


@lru_cache(maxsize=8)
def _upsert(dialect: str, tier: Tier):
    table = tier.table
    stmt = insert_rows(dialect, table, [c.name for c in table.c])
    new, old = stmt.excluded, table.c
    newer = new.last_ts > old.last_ts
    merged: dict[str, Any] = {
        "samples": old.samples + new.samples,
        "last_ts": case((newer, new.last_ts), else_=old.last_ts),
    }
    for f in FIELDS:
        lo, hi = f"{f}_min", f"{f}_max"
        merged[lo] = case((or_(old[lo].is_(None), new[lo] < old[lo]), new[lo]), else_=old[lo])
        merged[hi] = case((or_(old[hi].is_(None), new[hi] > old[hi]), new[hi]), else_=old[hi])
        merged[f"{f}_sum"] = old[f"{f}_sum"] + new[f"{f}_sum"]
        merged[f"{f}_n"] = old[f"{f}_n"] + new[f"{f}_n"]
        merged[f"{f}_last"] = case((newer, new[f"{f}_last"]), else_=old[f"{f}_last"])
    return stmt.on_conflict_do_update(index_elements=["device_id", "bucket"], set_=merged)
