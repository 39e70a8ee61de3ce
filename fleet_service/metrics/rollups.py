"""Storing a batch of samples: the raw rows, and the rollup buckets they fall in, in the caller's transaction.

A sample is keyed by (device_id, ts): inserting it again does nothing, and only samples whose raw row was
actually inserted are folded into the rollups (the insert returns them). So a sample delivered twice, or a batch
written again after a crash, is counted once, as long as its raw row is still kept (the raw retention window).
Each batch's new samples are folded per bucket, then merged into the stored bucket: min and max, sums and counts
added, and `_last` taken from whichever side has the greater `ts` — so a unit's late samples never overwrite a
newer value.

On PostgreSQL all of it is one statement: the batch goes as one JSON document (`json_to_recordset`), the raw
insert returns the rows it stored, and two upserts fold exactly those per minute and per hour in the database.
Sending the rollup rows themselves, 48 values each and two tiers, cost ingest more CPU than anything else at
10,000 units (psycopg builds array parameters in Python). SQLite folds in Python (`fold`), in-process.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, column, func, or_, select, type_coerce
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
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
    if dialect == "postgresql":
        return session.execute(_pg_store(), {"rows": rows}).scalar_one()
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
    stmt = insert_rows(dialect, tier.table, [c.name for c in tier.table.c])
    return stmt.on_conflict_do_update(index_elements=["device_id", "bucket"], set_=_merged(stmt.excluded, tier.table))


def _merged(new: Any, table: Any) -> dict[str, Any]:
    """The stored bucket (`table`'s row) merged with a new one (`excluded`)."""
    old = table.c
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
    return merged


@lru_cache(maxsize=1)
def _pg_store() -> Any:
    """WITH new AS (INSERT the batch's samples ON CONFLICT DO NOTHING RETURNING them), one upsert per tier of
    `new` grouped by bucket, SELECT how many were new. Bound: `rows`, the samples as one JSON array."""
    raw = table_of(MetricSample)
    names = ["device_id", "ts", "received_at", *FIELDS, "services", "extra"]
    source = (
        func.json_to_recordset(bindparam("rows", type_=postgresql.JSON))
        .table_valued(*(column(n, raw.c[n].type) for n in names))
        .render_derived(name="batch", with_types=True)
    )
    insert_raw = postgresql.insert(raw).from_select(names, select(*(source.c[n] for n in names)))
    new = (
        insert_raw.on_conflict_do_nothing(index_elements=["device_id", "ts"])
        .returning(*(raw.c[n] for n in ["device_id", "ts", *FIELDS]))
        .cte("new")
    )
    folds = [_fold_into(tier, new).cte(f"fold_{tier.name}") for tier in ROLLUPS]
    return select(func.count()).select_from(new).add_cte(*folds)


def _fold_into(tier: Tier, new: Any) -> Any:
    """INSERT INTO the tier's table the new samples folded per (unit, bucket), merged with stored buckets."""
    ts = new.c.ts
    bucket = (ts - ts % tier.width_ms).label("bucket")
    folded: dict[str, ColumnElement[Any]] = {
        "bucket": bucket,
        "last_ts": func.max(ts),
        "samples": func.count(),
        "device_id": new.c.device_id,
    }
    for f in FIELDS:
        value = new.c[f]
        kind = tier.table.c[f"{f}_last"].type
        folded[f"{f}_min"] = func.min(value)
        folded[f"{f}_max"] = func.max(value)
        folded[f"{f}_sum"] = type_coerce(func.coalesce(func.sum(value), 0), tier.table.c[f"{f}_sum"].type)
        folded[f"{f}_n"] = func.count(value)
        newest_first: ColumnElement[Any] = func.array_agg(aggregate_order_by(value, ts.desc()), type_=ARRAY(kind))
        folded[f"{f}_last"] = newest_first[1]
    names = [c.name for c in tier.table.c]
    grouped = (
        select(*(folded[n] for n in names))
        .group_by(new.c.device_id, bucket)
        .order_by(new.c.device_id, bucket)  # one order for every writer: no lock-order deadlocks
    )
    stmt = postgresql.insert(tier.table).from_select(names, grouped)
    return stmt.on_conflict_do_update(index_elements=["device_id", "bucket"], set_=_merged(stmt.excluded, tier.table))
