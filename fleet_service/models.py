"""Database tables (SQLModel) and the public shapes the API returns.

Times in tables are integer milliseconds since the epoch (the wire format); the API renders ISO 8601.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, UniqueConstraint, text
from sqlmodel import Field, SQLModel

# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")

LEVEL_NUMBERS = {"debug": 10, "info": 20, "notice": 25, "warning": 30, "error": 40, "critical": 50}


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(default=dict):
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


def _ms(**kw):
    return Field(sa_type=BigInteger, **kw)


class Device(SQLModel, table=True):
    """Identity plus the latest state of a unit: the API reads it without scanning history."""

    # Partial: only failing units are in it, so `?status=failing` reads a handful of entries.
    __table_args__ = (Index("ix_device_failing", "id", sqlite_where=text("failing = 1"),
                            postgresql_where=text("failing")),)

    id: str = Field(primary_key=True, max_length=63)
    name: str = Field(default="", max_length=200)
    tags: list[str] = _json(list)
    secret_hash: str = Field(max_length=200)
    created_at: int = _ms()

    online: bool = Field(default=False, index=True)
    session: str | None = Field(default=None, max_length=64)
    last_seen: int | None = _ms(default=None, nullable=True)
    online_changed_at: int | None = _ms(default=None, nullable=True)
    offline_reason: str | None = Field(default=None, max_length=32)
    agent_version: str = Field(default="", max_length=64)
    software_version: str = Field(default="", max_length=128)
    boot_id: str = Field(default="", max_length=64)
    hostname: str = Field(default="", max_length=255)
    ips: list[str] = _json(list)
    uptime_s: float | None = None
    heartbeat_seq: int | None = _ms(default=None, nullable=True)
    last_metrics: dict[str, Any] = _json(dict)
    failing: bool = False  # the latest metrics report a state "failed" (set by ingest; counts while online)
    logs_dropped: int = _ms(default=0)
    ingest_throttled: int = _ms(default=0)  # messages refused over the unit's ingest budget
    log_rows: int = _ms(default=0)  # about how many log rows it has (ingest adds, retention makes it exact)

    desired_config: dict[str, Any] = _json(dict)
    desired_version: int = 0
    reported_config: dict[str, Any] = _json(dict)
    reported_version: int = 0
    config_status: str | None = Field(default=None, max_length=16)
    config_error: str | None = None


class LogRecord(SQLModel, table=True):
    __tablename__ = "log_record"
    __table_args__ = (
        UniqueConstraint("device_id", "rec_id", name="uq_log_device_rec"),
        Index("ix_log_device_ts", "device_id", "ts"),
        Index("ix_log_received", "received_at"),  # retention runs on the server's time
    )

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    device_id: str = Field(max_length=63)
    rec_id: str = Field(max_length=64)
    ts: int = _ms()  # the unit's time (replaced by received_at when far from the server's clock)
    received_at: int | None = _ms(default=None, nullable=True)  # the server's time
    level: str = Field(max_length=16)
    level_no: int = 20
    source: str = Field(default="", max_length=128)
    msg: str


class MetricSample(SQLModel, table=True):
    __tablename__ = "metric_sample"
    __table_args__ = (Index("ix_metric_device_ts", "device_id", "ts"), Index("ix_metric_received", "received_at"))

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    device_id: str = Field(max_length=63)
    ts: int = _ms()
    received_at: int | None = _ms(default=None, nullable=True)
    cpu_percent: float | None = None
    mem_percent: float | None = None
    mem_used_bytes: int | None = _ms(default=None, nullable=True)
    disk_percent: float | None = None
    disk_free_bytes: int | None = _ms(default=None, nullable=True)
    load1: float | None = None
    temp_c: float | None = None
    net_rx_bytes: int | None = _ms(default=None, nullable=True)
    net_tx_bytes: int | None = _ms(default=None, nullable=True)
    services: dict[str, str] = _json(dict)
    extra: dict[str, Any] = _json(dict)


class Command(SQLModel, table=True):
    __table_args__ = (Index("ix_command_device_created", "device_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(max_length=63, index=True)
    name: str = Field(max_length=32)
    args: dict[str, Any] = _json(dict)
    status: str = Field(default="queued", max_length=16, index=True)
    created_at: int = _ms()
    updated_at: int = _ms()
    expires_at: int = _ms()
    timeout_s: int = 900
    started_at: int | None = _ms(default=None, nullable=True)
    finished_at: int | None = _ms(default=None, nullable=True)
    exit_code: int | None = None
    output: str = ""
    created_by: str = Field(default="", max_length=100)
    rollout_id: str | None = Field(default=None, max_length=64, index=True)


class CommandEvent(SQLModel, table=True):
    __tablename__ = "command_event"

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    command_id: str = Field(max_length=64, index=True)
    status: str = Field(max_length=16)
    ts: int = _ms()


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(default="", max_length=100)
    role: str = Field(max_length=16)
    fingerprint: str = Field(max_length=64, unique=True)
    created_at: int = _ms()
    last_used_at: int | None = _ms(default=None, nullable=True)
    revoked: bool = False


# === control plane (issue 4): rollouts and group config ======================================================
# Migration: migrations/versions/0002_control_plane.py. A rollout keeps all its state here so a restarted
# service (or another replica) continues it; per-unit progress is the state of the command sent to the unit.


class Rollout(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(default="", max_length=200)
    command: str = Field(max_length=32)
    args: dict[str, Any] = _json(dict)
    ttl_s: int = 3600
    timeout_s: int | None = None
    target: dict[str, Any] = _json(dict)  # {"tag": T} or {"device_ids": [...]}, as asked
    batch_size: int
    batches: int
    pause_s: float = 0.0
    abort_threshold: float = 1.0  # abort when failed / decided exceeds it
    state: str = Field(default="running", max_length=16, index=True)  # running|paused|completed|aborted|canceled
    dispatched_batches: int = 0
    next_batch_at: int | None = _ms(default=None, nullable=True)  # earliest start of the next batch
    reason: str = ""
    revision: int = 0  # bumped by every decision: two replicas never both act on the same state
    created_at: int = _ms()
    updated_at: int = _ms()
    finished_at: int | None = _ms(default=None, nullable=True)
    created_by: str = Field(default="", max_length=120)


class RolloutUnit(SQLModel, table=True):
    __tablename__ = "rollout_unit"
    __table_args__ = (Index("ix_rollout_unit_batch", "rollout_id", "batch"),)

    rollout_id: str = Field(primary_key=True, max_length=32)
    device_id: str = Field(primary_key=True, max_length=63)
    position: int
    batch: int
    state: str = Field(default="pending", max_length=16)  # pending | dispatched (see the command) | canceled
    command_id: str | None = Field(default=None, max_length=64)
    updated_at: int = _ms()


class ConfigGroup(SQLModel, table=True):
    """Config defaults for every unit carrying `tag`."""

    __tablename__ = "config_group"

    tag: str = Field(primary_key=True, max_length=64)
    config: dict[str, Any] = _json(dict)
    priority: int = 0  # merged in order of (priority, tag): a higher priority wins
    version: int = 1
    updated_at: int = _ms()
    updated_by: str = Field(default="", max_length=120)


class DeviceConfig(SQLModel, table=True):
    """A unit's own config, merged over its groups' defaults into `Device.desired_config`."""

    __tablename__ = "device_config"

    device_id: str = Field(primary_key=True, max_length=63)
    config: dict[str, Any] = _json(dict)
    updated_at: int = _ms()


# === end of control plane section ============================================================================


# --- public shapes -------------------------------------------------------------------------------------------


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
    return {"id": r.rec_id, "seq": r.id, "ts": r.ts, "time": iso(r.ts), "level": r.level, "source": r.source,
            "msg": r.msg}


def command_public(c: Command) -> dict[str, Any]:
    return {
        "id": c.id,
        "device_id": c.device_id,
        "name": c.name,
        "args": c.args,
        "status": c.status,
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "expires_at": iso(c.expires_at),
        "started_at": iso(c.started_at),
        "finished_at": iso(c.finished_at),
        "timeout_s": c.timeout_s,
        "exit_code": c.exit_code,
        "output": c.output,
        "created_by": c.created_by,
        "rollout_id": c.rollout_id,
    }


# === security (issue 5): operators, browser sessions, audit log, claim tokens, broker password entries ========
# Migration: migrations/versions/0003_security.py. Secrets never sit here in plain text.


class User(SQLModel, table=True):
    """A dashboard/API operator; the password is stored as a salted slow hash."""

    __tablename__ = "fleet_user"  # `user` is a reserved word in PostgreSQL

    id: str = Field(primary_key=True, max_length=32)
    username: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=200)
    created_at: int = _ms()
    password_changed_at: int = _ms()
    last_login_at: int | None = _ms(default=None, nullable=True)


class WebSession(SQLModel, table=True):
    """A dashboard login; `id` is the SHA-256 of the cookie value, so the table alone cannot log anyone in."""

    __tablename__ = "web_session"

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=32, index=True)
    created_at: int = _ms()
    last_seen_at: int = _ms()
    expires_at: int = _ms(index=True)
    source_ip: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=200)


class AuditEntry(SQLModel, table=True):
    """One state-changing API call: who, what, on which target, when, with which result."""

    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_ts", "ts"), Index("ix_audit_target_ts", "target", "ts"))

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    ts: int = _ms()
    actor: str = Field(max_length=120)
    role: str = Field(default="", max_length=16)
    method: str = Field(max_length=8)
    route: str = Field(max_length=200)
    path: str = Field(max_length=300)
    target: str = Field(default="", max_length=120)
    status: int
    source_ip: str = Field(default="", max_length=64)


class ClaimToken(SQLModel, table=True):
    """A one-time token a unit presents at install time to enroll itself (no admin token on the unit)."""

    __tablename__ = "claim_token"

    id: str = Field(primary_key=True, max_length=32)
    fingerprint: str = Field(max_length=64, unique=True)
    tags: list[str] = _json(list)
    created_at: int = _ms()
    expires_at: int = _ms()
    created_by: str = Field(default="", max_length=120)
    used_at: int | None = _ms(default=None, nullable=True)
    device_id: str | None = Field(default=None, max_length=63)


class BrokerCredential(SQLModel, table=True):
    """A unit's secret in Mosquitto's own password-file hash format, so a managed Mosquitto can be re-synced."""

    __tablename__ = "broker_credential"

    device_id: str = Field(primary_key=True, max_length=63)
    password_hash: str = Field(max_length=200)
    updated_at: int = _ms()


def user_public(u: User) -> dict[str, Any]:
    return {"id": u.id, "username": u.username, "role": u.role, "created_at": iso(u.created_at),
            "password_changed_at": iso(u.password_changed_at), "last_login_at": iso(u.last_login_at)}


def audit_public(a: AuditEntry) -> dict[str, Any]:
    return {"id": a.id, "ts": a.ts, "time": iso(a.ts), "actor": a.actor, "role": a.role, "method": a.method,
            "route": a.route, "path": a.path, "target": a.target, "status": a.status, "source_ip": a.source_ip}


def claim_token_public(c: ClaimToken, now: int) -> dict[str, Any]:
    state = "used" if c.used_at is not None else ("expired" if c.expires_at <= now else "open")
    return {"id": c.id, "tags": c.tags, "created_at": iso(c.created_at), "expires_at": iso(c.expires_at),
            "created_by": c.created_by, "state": state, "used_at": iso(c.used_at), "device_id": c.device_id}


# === end of security section =================================================================================
