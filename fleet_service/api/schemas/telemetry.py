"""Stored logs and metric series of a unit (fleet_service/api/routes/telemetry.py)."""

from __future__ import annotations

from typing import Any, Literal

from fleet_service.api.schemas.common import Public

__all__ = ["LogPage", "LogRecordPublic", "MetricBucket", "MetricPoint", "MetricSeries"]

Number = int | float | None


class LogRecordPublic(Public):
    id: str  # the unit's record id
    seq: int
    ts: int
    time: str
    level: str
    source: str
    msg: str


class LogPage(Public):
    items: list[LogRecordPublic]
    next_cursor: str | None


class _MetricSeries(Public):
    """The numeric series every point carries, at its time."""

    ts: int
    time: str
    cpu_percent: Number
    mem_percent: Number
    mem_used_bytes: Number
    disk_percent: Number
    disk_free_bytes: Number
    load1: Number
    temp_c: Number
    net_rx_bytes: Number
    net_tx_bytes: Number


class MetricPoint(_MetricSeries):
    """One stored sample (no `step`)."""

    services: dict[str, str]
    extra: dict[str, Any]


class MetricBucket(_MetricSeries):
    """The averages of one `step`-second bucket, with the maxima of two series and the sample count."""

    cpu_percent_max: Number
    temp_c_max: Number
    samples: int


class MetricSeries(Public):
    device_id: str
    since: str
    until: str
    step: int | None  # the bucket size used, in seconds: the one asked for, or rounded up to the tier's buckets
    tier: Literal["raw", "1m", "1h"]  # raw samples, or the per-minute or per-hour rollups
    points: list[MetricPoint] | list[MetricBucket]
