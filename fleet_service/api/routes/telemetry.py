"""Stored logs and metric series of a unit."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import func, or_
from sqlmodel import Session, and_, col, select

from fleet_service.api.deps import Ctx, Viewer, load_device
from fleet_service.api.params import MAX_TS_MS, parse_time
from fleet_service.api.schemas.telemetry import LogPage, MetricSeries
from fleet_service.db.columns import iso
from fleet_service.devices.models import LEVEL_NUMBERS, LogRecord, MetricSample, log_public
from fleet_service.errors import Invalid
from fleet_service.metrics import tiers
from fleet_service.settings import ServiceSettings
from protocol.ids import now_ms
from protocol.payloads import METRIC_FIELDS

router = APIRouter(prefix="/api/devices", tags=["telemetry"])
SERIES = METRIC_FIELDS
CURSOR_RE = re.compile(r"([0-9]{1,15}):([0-9]{1,19})")  # "ts:id" of the last line shown


def parse_cursor(cursor: str) -> tuple[int, int]:
    """The (ts, id) a next page starts below; 422 for anything a previous page did not hand out."""
    match = CURSOR_RE.fullmatch(cursor)
    if match is None or int(match[1]) >= MAX_TS_MS or int(match[2]) >= 2**63:
        raise Invalid("cursor must be the next_cursor value of a previous page")
    return int(match[1]), int(match[2])


@router.get("/{device_id}/logs", response_model=LogPage)
def get_logs(
    device_id: str,
    ctx: Ctx,
    _: Viewer,
    since: str | None = None,
    until: str | None = None,
    level: Annotated[str | None, Query(description="minimum level")] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    source: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    load_device(ctx, device_id)
    query = select(LogRecord).where(LogRecord.device_id == device_id)
    if (t := parse_time(since, "since")) is not None:
        query = query.where(LogRecord.ts >= t)
    if (t := parse_time(until, "until")) is not None:
        query = query.where(LogRecord.ts <= t)
    if level:
        if level.lower() not in LEVEL_NUMBERS:
            raise Invalid(f"level must be one of {', '.join(LEVEL_NUMBERS)}")
        query = query.where(LogRecord.level_no >= LEVEL_NUMBERS[level.lower()])
    if source:
        query = query.where(LogRecord.source == source)
    if q:
        pattern = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(func.lower(LogRecord.msg).like(pattern, escape="\\"))
    if cursor:
        c_ts, c_id = parse_cursor(cursor)
        query = query.where(or_(col(LogRecord.ts) < c_ts, and_(col(LogRecord.ts) == c_ts, col(LogRecord.id) < c_id)))
    query = query.order_by(col(LogRecord.ts).desc(), col(LogRecord.id).desc()).limit(limit + 1)
    with Session(ctx.engine) as s:
        rows = s.exec(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [log_public(r) for r in rows],
        "next_cursor": f"{rows[-1].ts}:{rows[-1].id}" if more and rows else None,
    }


@router.get("/{device_id}/metrics", response_model=MetricSeries)
def get_metrics(
    device_id: str,
    ctx: Ctx,
    _: Viewer,
    since: str | None = None,
    until: str | None = None,
    step: Annotated[
        int | None,
        Query(
            ge=1,
            le=86400,
            description="bucket size in seconds; the tier read may round it up (the response's `step` and `tier`)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> dict[str, Any]:
    load_device(ctx, device_id)
    now = now_ms()
    end = parse_time(until, "until") or now
    start = parse_time(since, "since")
    if start is None:
        start = end - 3600_000
    if start > end:
        raise Invalid("since must not be after until")
    where = (MetricSample.device_id == device_id, MetricSample.ts >= start, MetricSample.ts <= end)
    if step is None:  # the raw samples themselves, newest `limit` of the range
        with Session(ctx.engine) as s:
            rows = s.exec(select(MetricSample).where(*where).order_by(col(MetricSample.ts).desc()).limit(limit)).all()
        points = [
            {
                "ts": r.ts,
                "time": iso(r.ts),
                **{k: getattr(r, k) for k in SERIES},
                "services": r.services,
                "extra": r.extra,
            }
            for r in reversed(rows)
        ]
        return {
            "device_id": device_id,
            "since": iso(start),
            "until": iso(end),
            "step": None,
            "tier": "raw",
            "points": points,
        }
    choice = tiers.choose(start, end, step, now, horizons(ctx.settings))
    if (end - start) / (choice.step_s * 1000) > limit:
        raise Invalid(f"range/step gives more than {limit} points; raise step or limit")
    with Session(ctx.engine) as s:
        buckets = tiers.buckets(s, choice, device_id, start, end)
    points = []
    for point in buckets:
        ts = point.pop("bucket")
        points.append(
            {"ts": ts, "time": iso(ts), **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in point.items()}}
        )
    return {
        "device_id": device_id,
        "since": iso(start),
        "until": iso(end),
        "step": choice.step_s,
        "tier": choice.tier,
        "points": points,
    }


def horizons(settings: ServiceSettings) -> tiers.Horizons:
    return tiers.Horizons(
        raw_ms=settings.metric_raw_retention_h * 3_600_000,
        minute_ms=settings.metric_1m_retention_days * 86_400_000,
        hour_ms=settings.metric_1h_retention_days * 86_400_000,
    )
