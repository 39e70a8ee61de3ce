"""Retention: logs, metric history and audit entries older than their configured age go, and no unit keeps more
than its cap of log rows (past it, its oldest go first).

On PostgreSQL the raw samples, the logs and the per-minute rollups are partitioned by day (`db/partitions.py`): a
pass creates the coming days' partitions and drops the days wholly past retention; rows that landed in a default
partition (a unit's clock far behind, a day already dropped) are deleted by the server's receive time. On SQLite,
and for the hourly rollups everywhere, rows are deleted in small batches: logs and raw samples by the server's
receive time (a unit's clock cannot keep them forever), rollups by their bucket's time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import column, delete, func, select, table, tuple_, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from fleet_service.db import partitions
from fleet_service.devices.models import Device, LogRecord
from fleet_service.metrics.models import HOUR, MINUTE
from fleet_service.prometheus import Registry
from protocol.ids import now_ms

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
ROLLUP_KEY = ("device_id", "bucket")


@dataclass(frozen=True)
class Keep:
    """How long each kind of history is kept; 0 keeps it forever. Audit entries only when `audit_days` is set."""

    log_days: int = 30
    raw_hours: int = 48  # raw metric samples
    minute_days: int = 30  # per-minute rollups
    hour_days: int = 730  # per-hour rollups
    audit_days: int | None = None
    ahead_days: int = 3  # PostgreSQL: partitions made this many days ahead


# name -> (table, its key columns, the column retention reads, that column's age limit from Keep in ms)
def _kinds(keep: Keep) -> dict[str, tuple[str, tuple[str, ...], str, int]]:
    kinds = {
        "logs": ("log_record", ("id",), "received_at", keep.log_days * DAY_MS),
        "metrics": ("metric_sample", ("device_id", "ts"), "received_at", keep.raw_hours * HOUR_MS),
        "metric_1m": (MINUTE.table.name, ROLLUP_KEY, "bucket", keep.minute_days * DAY_MS),
        "metric_1h": (HOUR.table.name, ROLLUP_KEY, "bucket", keep.hour_days * DAY_MS),
    }
    if keep.audit_days is not None:
        kinds["audit"] = ("audit_entry", ("id",), "ts", keep.audit_days * DAY_MS)
    return kinds


def prune(engine: Engine, keep: Keep, batch: int = 5000, now: int | None = None) -> dict[str, int]:
    """Delete what is past retention; returns rows deleted per kind and, on PostgreSQL, whole days dropped
    (`<kind>_days_dropped`). Small batches keep each transaction (and any lock) short."""
    now = now_ms() if now is None else now
    removed: dict[str, int] = {}
    kinds = _kinds(keep)
    if partitions.supported(engine):
        with partitions.maintenance_lock(engine) as mine:
            if not mine:  # another replica is at it
                return removed
            for kind, (name, keys, when, age) in kinds.items():
                if name in partitions.PARTITIONED and _partitioned(engine, name):
                    _created, dropped = partitions.maintain(engine, name, now, age, keep.ahead_days)
                    removed[f"{kind}_days_dropped"] = dropped
                    kinds[kind] = (partitions.default_name(name), keys, when, age)
            return removed | _delete_rows(engine, kinds, now, batch)
    return removed | _delete_rows(engine, kinds, now, batch)


def _partitioned(engine: Engine, name: str) -> bool:
    with engine.connect() as conn:
        return partitions.is_partitioned(conn, name)


def _delete_rows(engine: Engine, kinds: dict[str, Any], now: int, batch: int) -> dict[str, int]:
    removed = {}
    for kind, (name, keys, when, age) in kinds.items():
        removed[kind] = 0
        if age <= 0:  # 0 keeps everything
            continue
        if keys == ROLLUP_KEY:
            removed[kind] = _delete_per_unit(engine, name, now - age)
            continue
        target = table(name, *(column(k) for k in keys), column(when))
        key = tuple_(*(target.c[k] for k in keys)) if len(keys) > 1 else target.c[keys[0]]
        while True:
            with engine.begin() as conn:
                found = conn.execute(
                    select(*(target.c[k] for k in keys)).where(target.c[when] < now - age).limit(batch)
                )
                ids = [tuple(r) if len(keys) > 1 else r[0] for r in found]
                if ids:
                    conn.execute(delete(target).where(key.in_(ids)))
            removed[kind] += len(ids)
            if len(ids) < batch:
                break
    return removed


def _delete_per_unit(engine: Engine, name: str, cutoff: int, units_per_statement: int = 500) -> int:
    """Rollup rows before `cutoff`, a range of the primary key for a few hundred units at a time (no index on the
    bucket alone: it would cost every row a second index entry for one hourly pass)."""
    target = table(name, column("device_id"), column("bucket"))
    with engine.connect() as conn:
        units = conn.execute(select(col(Device.id)).order_by(col(Device.id))).scalars().all()
    removed = 0
    for i in range(0, len(units), units_per_statement):
        with engine.begin() as conn:
            done = conn.execute(
                delete(target).where(
                    target.c.device_id.in_(units[i : i + units_per_statement]), target.c.bucket < cutoff
                )
            )
            removed += done.rowcount or 0
    return removed


def cap_logs(engine: Engine, max_rows: int, batch: int = 5000) -> int:
    """Keep at most `max_rows` log rows per unit, deleting a unit's oldest first; returns how many went.

    Ingest adds to `device.log_rows` as it inserts; only units whose count says they may be over are counted
    exactly here (an index range of that unit), so a pass costs little when nobody is near the cap."""
    if max_rows <= 0:  # 0: no cap
        return 0
    removed = 0
    with engine.connect() as conn:
        suspects = conn.execute(select(col(Device.id)).where(col(Device.log_rows) > max_rows)).scalars().all()
    for device_id in suspects:
        with engine.connect() as conn:
            exact = conn.execute(
                select(func.count()).select_from(LogRecord).where(col(LogRecord.device_id) == device_id)
            ).scalar_one()
        excess = exact - max_rows
        while excess > 0:
            with engine.begin() as conn:
                ids = (
                    conn.execute(
                        select(col(LogRecord.id))
                        .where(col(LogRecord.device_id) == device_id)
                        .order_by(col(LogRecord.ts), col(LogRecord.id))
                        .limit(min(batch, excess))
                    )
                    .scalars()
                    .all()
                )
                conn.execute(delete(LogRecord).where(col(LogRecord.id).in_(ids)))
            removed += len(ids)
            excess -= len(ids)
            if not ids:
                break
        with engine.begin() as conn:  # exact again; what ingest added meanwhile is counted at the next pass
            conn.execute(update(Device).where(col(Device.id) == device_id).values(log_rows=min(exact, max_rows)))
    return removed


def audit_days_from_environment() -> int:
    """FLEET_AUDIT_RETENTION_DAYS (default 365), for a caller that does not pass the service's settings."""
    from fleet_service.settings import ServiceSettings

    try:
        return ServiceSettings().audit_retention_days
    except ValueError as exc:  # pydantic's ValidationError: a FLEET_* variable the command line overrode
        default = ServiceSettings.model_fields["audit_retention_days"].default
        log.warning("audit retention: FLEET_* settings unreadable (%s); keeping %d days", type(exc).__name__, default)
        return default


async def run_retention(
    engine: Engine, registry: Registry, keep: Keep, interval_s: float = 3600.0, log_rows_per_unit: int = 0
) -> None:
    registry.describe("fleet_retention_deleted_total", "counter", "Rows deleted by retention, by kind")
    registry.describe("fleet_retention_days_dropped_total", "counter", "Daily partitions dropped, by kind")
    if keep.audit_days is None:
        keep = replace(keep, audit_days=audit_days_from_environment())
    while True:
        try:
            removed = await asyncio.to_thread(prune, engine, keep)
            removed["logs_over_cap"] = await asyncio.to_thread(cap_logs, engine, log_rows_per_unit)
            for kind, count in removed.items():
                if count and kind.endswith("_days_dropped"):
                    registry.inc("fleet_retention_days_dropped_total", count, kind=kind.removesuffix("_days_dropped"))
                elif count:
                    registry.inc("fleet_retention_deleted_total", count, kind=kind)
                    log.info("retention removed %d %s rows", count, kind)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(interval_s)
