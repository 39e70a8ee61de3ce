"""Units and what they reported: identity and latest state, log records, metric samples."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from fleet_service.db.columns import BIG_ID, iso, json_field, ms_field


class Device(SQLModel, table=True):
    """Identity plus the latest state of a unit: the API reads it without scanning history."""

    # Partial: only failing units are in it, so `?status=failing` reads a handful of entries.
    __table_args__ = (
        Index("ix_device_failing", "id", sqlite_where=text("failing = 1"), postgresql_where=text("failing")),
    )

    id: str = Field(primary_key=True, max_length=63)
    name: str = Field(default="", max_length=200)
    tags: list[str] = json_field(list)
    secret_hash: str = Field(max_length=200)
    created_at: int = ms_field()

    online: bool = Field(default=False, index=True)
    session: str | None = Field(default=None, max_length=64)
    last_seen: int | None = ms_field(default=None, nullable=True)
    online_changed_at: int | None = ms_field(default=None, nullable=True)
    offline_reason: str | None = Field(default=None, max_length=32)
    agent_version: str = Field(default="", max_length=64)
    software_version: str = Field(default="", max_length=128)
    boot_id: str = Field(default="", max_length=64)
    hostname: str = Field(default="", max_length=255)
    ips: list[str] = json_field(list)
    uptime_s: float | None = None
    heartbeat_seq: int | None = ms_field(default=None, nullable=True)
    last_metrics: dict[str, Any] = json_field(dict)
    failing: bool = False  # the latest metrics report a state "failed" (set by ingest; counts while online)
    logs_dropped: int = ms_field(default=0)
    ingest_throttled: int = ms_field(default=0)  # messages refused over the unit's ingest budget
    log_rows: int = ms_field(default=0)  # about how many log rows it has (ingest adds, retention makes it exact)

    desired_config: dict[str, Any] = json_field(dict)
    desired_version: int = 0
    reported_config: dict[str, Any] = json_field(dict)
    reported_version: int = 0
    config_status: str | None = Field(default=None, max_length=16)
    config_error: str | None = None


class UnitTag(SQLModel, table=True):
    """One row per tag of a unit: the exact, indexed lookup behind "the units carrying tag T" (Device.tags keeps
    the list the API shows). Written only by devices.tags, removed with the unit."""

    __tablename__ = "unit_tag"
    __table_args__ = (Index("ix_unit_tag_tag", "tag"),)

    device_id: str = Field(primary_key=True, max_length=63)
    tag: str = Field(primary_key=True, max_length=64)


class LogRecord(SQLModel, table=True):
    """A unit's log line. On PostgreSQL the table is partitioned by day of `ts` (`db/partitions.py`): its primary
    key there is (id, ts) and a unique constraint must hold the partition key, hence `ts` in `uq_log_device_rec_ts`
    (a record whose `ts` was replaced by the receive time is checked by (device_id, rec_id) before it is inserted:
    `ingest/persister.py`)."""

    __tablename__ = "log_record"
    __table_args__ = (
        UniqueConstraint("device_id", "rec_id", "ts", name="uq_log_device_rec_ts"),
        Index("ix_log_device_ts", "device_id", "ts"),
        Index("ix_log_received", "received_at"),  # retention runs on the server's time
    )

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    device_id: str = Field(max_length=63)
    rec_id: str = Field(max_length=64)
    ts: int = ms_field()  # the unit's time (replaced by received_at when far from the server's clock)
    received_at: int | None = ms_field(default=None, nullable=True)  # the server's time
    level: str = Field(max_length=16)
    level_no: int = 20
    source: str = Field(default="", max_length=128)
    msg: str


class MetricSample(SQLModel, table=True):
    """A raw sample, kept for a short window (`FLEET_METRIC_RAW_RETENTION_H`); `metrics/` keeps its rollups.

    One sample per unit and `ts`: the key makes storing idempotent, and only a sample that was inserted is folded
    into the rollups. On PostgreSQL the table is partitioned by day of `ts`."""

    __tablename__ = "metric_sample"
    __table_args__ = (Index("ix_metric_received", "received_at"),)

    device_id: str = Field(max_length=63, primary_key=True)
    ts: int = ms_field(primary_key=True)
    received_at: int | None = ms_field(default=None, nullable=True)
    cpu_percent: float | None = None
    mem_percent: float | None = None
    mem_used_bytes: int | None = ms_field(default=None, nullable=True)
    disk_percent: float | None = None
    disk_free_bytes: int | None = ms_field(default=None, nullable=True)
    load1: float | None = None
    temp_c: float | None = None
    net_rx_bytes: int | None = ms_field(default=None, nullable=True)
    net_tx_bytes: int | None = ms_field(default=None, nullable=True)
    services: dict[str, str] = json_field(dict)
    extra: dict[str, Any] = json_field(dict)


LEVEL_NUMBERS = {"debug": 10, "info": 20, "notice": 25, "warning": 30, "error": 40, "critical": 50}


def device_public(d: Device) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "tags": d.tags,
        "created_at": iso(d.created_at),
        **device_status(d),
    }


def device_status(d: Device) -> dict[str, Any]:
    return {
        "id": d.id,
        "online": d.online,
        "status": "online" if d.online else "offline",
        "last_seen": iso(d.last_seen),
        "online_changed_at": iso(d.online_changed_at),
        "offline_reason": None if d.online else d.offline_reason,
        "software_version": d.software_version,
        "agent_version": d.agent_version,
        "boot_id": d.boot_id,
        "hostname": d.hostname,
        "ips": d.ips,
        "uptime_s": d.uptime_s,
        "metrics": d.last_metrics,
        "logs_dropped": d.logs_dropped,
        "ingest_throttled": d.ingest_throttled,
        "config_in_sync": d.reported_version == d.desired_version and d.config_status != "failed",
    }


def log_public(r: LogRecord) -> dict[str, Any]:
    return {
        "id": r.rec_id,
        "seq": r.id,
        "ts": r.ts,
        "time": iso(r.ts),
        "level": r.level,
        "source": r.source,
        "msg": r.msg,
    }
