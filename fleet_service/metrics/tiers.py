"""Which tier a metric chart reads, and reading it.

A series of `step`-second buckets comes from the coarsest tier whose bucket width divides the step (hours for
a multiple of 3,600, minutes for a multiple of 60, else the raw samples), moved to a coarser tier when the finer
one no longer holds the range's start (its retention) or would read more than ROW_BUDGET rows. A coarser tier
than the step allows rounds the step up to a multiple of its width; the response names the tier and the step used.
So a 7-day chart reads at most 7 x 1,440 minute rows (10-minute steps) or 168 hour rows (hourly steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fleet_service.devices.models import MetricSample
from fleet_service.metrics.models import FIELDS, HOUR, MINUTE, Tier

RAW_INTERVAL_MS = 10_000  # the agents' default metrics interval: about how many raw rows a range holds
ROW_BUDGET = 7 * 1440  # rows one chart may read: a week of minutes
NAMES = ["bucket", *FIELDS, "cpu_percent_max", "temp_c_max", "samples"]


@dataclass(frozen=True)
class Horizons:
    """How far back each tier reaches (ms; 0: forever), from the retention settings."""

    raw_ms: int
    minute_ms: int
    hour_ms: int


@dataclass(frozen=True)
class Choice:
    tier: str  # "raw", "1m" or "1h"
    step_s: int


def choose(start: int, end: int, step_s: int, now: int, horizons: Horizons) -> Choice:
    options = [  # name, bucket width (ms; raw: any step), ms per row for the budget, how far back it reaches
        ("raw", 1, RAW_INTERVAL_MS, horizons.raw_ms),
        (MINUTE.name, MINUTE.width_ms, MINUTE.width_ms, horizons.minute_ms),
        (HOUR.name, HOUR.width_ms, HOUR.width_ms, horizons.hour_ms),
    ]
    step_ms = step_s * 1000
    first = max(i for i, (_, width, _, _) in enumerate(options) if step_ms % width == 0)
    chosen = options[-1]
    for option in options[first:]:
        _, _, per_row, reach = option
        if (reach == 0 or start >= now - reach) and (end - start) / per_row <= ROW_BUDGET:
            chosen = option
            break
    name, width, _, _ = chosen
    return Choice(name, math.ceil(step_ms / width) * width // 1000)


def raw_buckets(session: Session, device_id: str, start: int, end: int, step_s: int) -> Sequence[Any]:
    bucket = col(MetricSample.ts) // (step_s * 1000)
    averages = [func.avg(getattr(MetricSample, k)).label(k) for k in FIELDS]
    query = select(
        bucket.label("bucket"),
        *averages,
        func.max(MetricSample.cpu_percent).label("cpu_percent_max"),
        func.max(MetricSample.temp_c).label("temp_c_max"),
        func.count().label("samples"),
    ).where(col(MetricSample.device_id) == device_id, col(MetricSample.ts) >= start, col(MetricSample.ts) <= end)
    return session.execute(query.group_by(bucket).order_by(bucket)).all()


def rollup_buckets(session: Session, tier: Tier, device_id: str, start: int, end: int, step_s: int) -> Sequence[Any]:
    """Buckets from a rollup tier: each of its rows whose span meets [start, end] (the range rounded out to whole
    rows), averages weighted by how many samples carried each field."""
    t = tier.table.c
    bucket = t.bucket // (step_s * 1000)
    averages = [(func.sum(t[f"{k}_sum"]) / func.nullif(func.sum(t[f"{k}_n"]), 0)).label(k) for k in FIELDS]
    query = select(
        bucket.label("bucket"),
        *averages,
        func.max(t.cpu_percent_max).label("cpu_percent_max"),
        func.max(t.temp_c_max).label("temp_c_max"),
        func.sum(t.samples).label("samples"),
    ).where(t.device_id == device_id, t.bucket > start - tier.width_ms, t.bucket <= end)
    return session.execute(query.group_by(bucket).order_by(bucket)).all()


def buckets(session: Session, choice: Choice, device_id: str, start: int, end: int) -> list[dict[str, Any]]:
    if choice.tier == "raw":
        rows = raw_buckets(session, device_id, start, end, choice.step_s)
    else:
        tier = MINUTE if choice.tier == MINUTE.name else HOUR
        rows = rollup_buckets(session, tier, device_id, start, end, choice.step_s)
    out = []
    for row in rows:
        point: dict[str, Any] = dict(zip(NAMES, row, strict=True))
        point["bucket"] = int(point["bucket"]) * choice.step_s * 1000
        point["samples"] = int(point["samples"])
        out.append(point)
    return out
