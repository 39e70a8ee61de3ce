"""Retention: logs, metric samples and audit entries older than their configured age are deleted, in small
batches."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from fleet_service.models import AuditEntry, LogRecord, MetricSample
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
    kinds = [("logs", LogRecord, log_days), ("metrics", MetricSample, metric_days)]
    if audit_days is not None:
        kinds.append(("audit", AuditEntry, audit_days))
    for name, table, days in kinds:
        removed[name] = 0
        if days <= 0:  # 0 keeps everything
            continue
        cutoff = now - days * DAY_MS
        while True:
            with engine.begin() as conn:
                ids = conn.execute(select(table.id).where(table.ts < cutoff).limit(batch)).scalars().all()
                if ids:
                    conn.execute(delete(table).where(table.id.in_(ids)))
            removed[name] += len(ids)
            if len(ids) < batch:
                break
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
                        interval_s: float = 3600.0, audit_days: int | None = None) -> None:
    registry.describe("fleet_retention_deleted_total", "counter", "Rows deleted by retention, by kind")
    if audit_days is None:
        audit_days = audit_days_from_environment()
    while True:
        try:
            removed = await asyncio.to_thread(prune, engine, log_days, metric_days, audit_days=audit_days)
            for kind, count in removed.items():
                if count:
                    registry.inc("fleet_retention_deleted_total", count, kind=kind)
                    log.info("retention removed %d %s rows", count, kind)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(interval_s)
