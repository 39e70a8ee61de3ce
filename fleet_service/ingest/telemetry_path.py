"""Heartbeats, metrics and logs: the bulk of ingest, written without the ORM.

A unit whose messages in a batch are only these kinds is read narrowly (id, online, software_version) and
updated with one executemany UPDATE per set of changed columns. Loading and flushing full ORM rows for
thousands of units per second cost more CPU than everything else in ingest together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, case, select, update
from sqlalchemy.orm import Session

from fleet_service.db.bulk import one_of
from fleet_service.db.core import table_of
from fleet_service.devices.models import LEVEL_NUMBERS, Device
from protocol.payloads import METRIC_FIELDS, Heartbeat, LogBatch, Metrics
from protocol.topics import Kind

TELEMETRY_KINDS = frozenset({Kind.HEARTBEAT, Kind.METRICS, Kind.LOGS})
METRIC_COLUMNS = METRIC_FIELDS
Event = tuple[str, dict[str, Any]]  # (event type, data) for one unit


@dataclass(slots=True)
class UnitState:
    """What telemetry handlers read of a unit, and the column values they change."""

    id: str
    online: bool
    software_version: str
    values: dict[str, Any] = field(default_factory=dict)
    dropped: int = 0  # log records the unit reported as dropped, added to logs_dropped
    dropped_total: int | None = None  # the unit's own running total: logs_dropped becomes at least this
    restamped: int = 0  # records whose ts was too far from the server's clock (replaced by the receive time)
    log_rows: int = 0  # log records added in this batch (duplicates included: retention makes the count exact)

    @classmethod
    def of(cls, device: Device) -> UnitState:
        return cls(device.id, bool(device.online), device.software_version or "")

    def apply_to(self, device: Device) -> None:
        """Copy the changes onto an ORM row (units that also sent other kinds in this batch)."""
        for name, value in self.values.items():
            setattr(device, name, value)
        if self.dropped:
            device.logs_dropped = (device.logs_dropped or 0) + self.dropped
        if self.dropped_total is not None:
            device.logs_dropped = max(device.logs_dropped or 0, self.dropped_total)
        if self.log_rows:
            device.log_rows = (device.log_rows or 0) + self.log_rows


def load_states(session: Session, ids: set[str]) -> dict[str, UnitState]:
    if not ids:
        return {}
    conn = session.connection()
    rows = conn.execute(_states_read(conn.dialect.name), {"ids": sorted(ids)})
    return {r.id: UnitState(r.id, bool(r.online), r.software_version or "") for r in rows}


@lru_cache(maxsize=2)
def _states_read(dialect: str) -> Any:
    table = table_of(Device)
    return select(table.c.id, table.c.online, table.c.software_version).where(one_of(dialect, table.c.id, "ids"))


@dataclass(frozen=True)
class ClockWindow:
    """How far a unit's `ts` may be from the server's receive time before the receive time replaces it."""

    behind_ms: int = 90 * 86_400_000
    ahead_ms: int = 600_000

    def stamp(self, state: UnitState, ts: int, received_ms: int) -> int:
        if received_ms - self.behind_ms <= ts <= received_ms + self.ahead_ms:
            return ts
        state.restamped += 1
        return received_ms


CLOCK = ClockWindow()


def heartbeat(state: UnitState, hb: Heartbeat, received_ms: int) -> list[Event]:
    v = state.values
    v["last_seen"] = received_ms
    v["hostname"] = hb.hostname
    v["ips"] = list(hb.ips)
    v["uptime_s"] = hb.uptime_s
    v["heartbeat_seq"] = hb.seq
    if hb.software_version:
        v["software_version"] = state.software_version = hb.software_version
    if hb.agent_version:
        v["agent_version"] = hb.agent_version
    out: list[Event] = []
    if not state.online:  # alive after a presence timeout (or a missed birth)
        state.online = True
        v["online"], v["online_changed_at"], v["offline_reason"] = True, received_ms, None
        out.append(
            (
                "presence",
                {
                    "device_id": state.id,
                    "online": True,
                    "reason": None,
                    "last_seen": received_ms,
                    "software_version": state.software_version,
                },
            )
        )
    out.append(
        (
            "heartbeat",
            {
                "device_id": state.id,
                "seq": hb.seq,
                "uptime_s": hb.uptime_s,
                "last_seen": received_ms,
                "software_version": state.software_version,
            },
        )
    )
    return out


def metrics(
    state: UnitState, m: Metrics, received_ms: int, samples: list[dict[str, Any]], clock: ClockWindow = CLOCK
) -> list[Event]:
    row = {c: getattr(m, c) for c in METRIC_COLUMNS}
    latest = {k: value for k, value in row.items() if value is not None}
    ts = clock.stamp(state, m.ts, received_ms)
    latest.update(ts=ts, services=m.services, extra=m.extra)
    state.values["last_seen"] = received_ms
    state.values["last_metrics"] = latest
    state.values["failing"] = reports_failure(m.services) or reports_failure(m.extra)
    samples.append(
        {"device_id": state.id, "ts": ts, "received_at": received_ms, **row, "services": m.services, "extra": m.extra}
    )
    return [("metrics", {"device_id": state.id, **latest})]


def reports_failure(value: Any) -> bool:
    """A state "failed" anywhere in a unit's report: a systemd service, or a recorder state in `extra`.

    Stored as `device.failing`; the unit counts as failing while it is also online (GET /api/devices).
    """
    if isinstance(value, dict):
        return any(v == "failed" or reports_failure(v) for v in value.values())
    if isinstance(value, list):
        return any(reports_failure(v) for v in value)
    return False


LOG_COLUMNS = ("device_id", "rec_id", "ts", "received_at", "level", "level_no", "source", "msg")  # every log row's keys


def logs(
    state: UnitState,
    batch: LogBatch,
    received_ms: int,
    rows: dict[tuple[str, str], dict[str, Any]],
    clock: ClockWindow = CLOCK,
    restamped: set[tuple[str, str]] | None = None,
) -> list[Event]:
    state.values["last_seen"] = received_ms
    state.dropped += batch.dropped
    if batch.dropped_total is not None:  # a resent batch repeats its total: a maximum never counts it twice
        state.dropped_total = max(state.dropped_total or 0, batch.dropped_total)
    out: list[Event] = []
    for r in batch.records:
        key = (state.id, r.id)
        if key in rows:
            continue
        ts = clock.stamp(state, r.ts, received_ms)
        if ts != r.ts and restamped is not None:
            restamped.add(key)
        state.log_rows += 1
        rows[key] = {
            "device_id": state.id,
            "rec_id": r.id,
            "ts": ts,
            "received_at": received_ms,
            "level": r.level,
            "level_no": LEVEL_NUMBERS[r.level],
            "source": r.source,
            "msg": r.msg,
        }
        out.append(
            ("log", {"device_id": state.id, "id": r.id, "ts": ts, "level": r.level, "source": r.source, "msg": r.msg})
        )
    return out


def write_updates(session: Session, states: dict[str, UnitState]) -> None:
    """One executemany UPDATE per distinct set of changed columns (usually two or three per batch)."""
    groups: dict[tuple[tuple[str, ...], bool, bool, bool], list[dict[str, Any]]] = {}
    for s in states.values():
        if not s.values and not s.dropped and s.dropped_total is None and not s.log_rows:
            continue
        row = {f"b_{name}": value for name, value in s.values.items()}
        row["b_id"] = s.id
        if s.dropped:
            row["b_dropped"] = s.dropped
        if s.dropped_total is not None:
            row["b_dropped_total"] = s.dropped_total
        if s.log_rows:
            row["b_log_rows"] = s.log_rows
        key = (tuple(sorted(s.values)), s.dropped > 0, s.dropped_total is not None, s.log_rows > 0)
        groups.setdefault(key, []).append(row)
    for (columns, dropped, total, counted), rows in groups.items():
        session.execute(_update_statement(columns, dropped, total, counted), rows)


@lru_cache(maxsize=64)
def _update_statement(columns: tuple[str, ...], dropped: bool, total: bool, counted: bool = False):
    table = table_of(Device)
    values: dict[str, Any] = {name: bindparam(f"b_{name}", type_=table.c[name].type) for name in columns}
    current = table.c.logs_dropped + bindparam("b_dropped") if dropped else table.c.logs_dropped
    if total:
        reported = bindparam("b_dropped_total", type_=table.c.logs_dropped.type)
        values["logs_dropped"] = case((current < reported, reported), else_=current)
    elif dropped:
        values["logs_dropped"] = current
    if counted:
        values["log_rows"] = table.c.log_rows + bindparam("b_log_rows")
    return update(table).where(table.c.id == bindparam("b_id")).values(values)
