"""Retention: logs, metric samples and audit entries older than their configured age are deleted, in small
batches; logs and metric samples by the server's receive time (a unit's clock cannot keep them forever). No unit
keeps more than its cap of log rows: past it, its oldest go first."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine

from fleet_service.models import AuditEntry, Device, LogRecord, MetricSample
from fleet_service.telemetry import Registry
from protocol.ids import now_ms

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


def prune(engine: Engine, log_days: int, metric_days: int, batch: int = 5000,
          audit_days: int | None = None) -> dict[str, int]:
    """Delete what is past retention; small batches keep each transaction (and any lock) short. Audit entries
    only when `audit_days` is given."""
    removed = {}
    now = now_ms()
    kinds = [("logs", LogRecord, LogRecord.received_at, log_days),
             ("metrics", MetricSample, MetricSample.received_at, metric_days)]
    if audit_days is not None:
        kinds.append(("audit", AuditEntry, AuditEntry.ts, audit_days))
    for name, table, when, days in kinds:
        removed[name] = 0
        if days <= 0:  # 0 keeps everything
            continue
        cutoff = now - days * DAY_MS
        while True:
            with engine.begin() as conn:
                ids = conn.execute(select(table.id).where(when < cutoff).limit(batch)).scalars().all()
                if ids:
                    conn.execute(delete(table).where(table.id.in_(ids)))
            removed[name] += len(ids)
            if len(ids) < batch:
                break
    return removed


def cap_logs(engine: Engine, max_rows: int, batch: int = 5000) -> int:
    """Keep at most `max_rows` log rows per unit, deleting a unit's oldest first; returns how many went.

    Ingest adds to `device.log_rows` as it inserts; only units whose count says they may be over are counted
    exactly here (an index range of that unit), so a pass costs little when nobody is near the cap."""
    if max_rows <= 0:  # 0: no cap
        return 0
    removed = 0
    with engine.connect() as conn:
        suspects = conn.execute(select(Device.id).where(Device.log_rows > max_rows)).scalars().all()
    for device_id in suspects:
        with engine.connect() as conn:
            exact = conn.execute(select(func.count()).select_from(LogRecord)
                                 .where(LogRecord.device_id == device_id)).scalar_one()
        excess = exact - max_rows
        while excess > 0:
            with engine.begin() as conn:
                ids = conn.execute(select(LogRecord.id).where(LogRecord.device_id == device_id)
                                   .order_by(LogRecord.ts, LogRecord.id).limit(min(batch, excess))).scalars().all()
                conn.execute(delete(LogRecord).where(LogRecord.id.in_(ids)))
            removed += len(ids)
            excess -= len(ids)
            if not ids:
                break
        with engine.begin() as conn:  # exact again; what ingest added meanwhile is counted at the next pass
            conn.execute(update(Device).where(Device.id == device_id).values(log_rows=min(exact, max_rows)))
    return removed


def audit_days_from_environment() -> int:
    """FLEET_AUDIT_RETENTION_DAYS (default 365), for a caller that does not pass the service's settings."""
    from fleet_service.config import ServiceSettings

    try:
        return ServiceSettings().audit_retention_days
    except ValueError as exc:  # pydantic's ValidationError: a FLEET_* variable the command line overrode
        default = ServiceSettings.model_fields["audit_retention_days"].default
        log.warning("audit retention: FLEET_* settings unreadable (%s); keeping %d days", type(exc).__name__, default)
        return default


async def run_retention(engine: Engine, registry: Registry, log_days: int, metric_days: int,
                        interval_s: float = 3600.0, audit_days: int | None = None,
                        log_rows_per_unit: int = 0) -> None:
    registry.describe("fleet_retention_deleted_total", "counter", "Rows deleted by retention, by kind")
    if audit_days is None:
        audit_days = audit_days_from_environment()
    while True:
        try:
            removed = await asyncio.to_thread(prune, engine, log_days, metric_days, audit_days=audit_days)
            removed["logs_over_cap"] = await asyncio.to_thread(cap_logs, engine, log_rows_per_unit)
            for kind, count in removed.items():
                if count:
                    registry.inc("fleet_retention_deleted_total", count, kind=kind)
                    log.info("retention removed %d %s rows", count, kind)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(interval_s)
