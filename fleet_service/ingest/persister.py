"""Turn a batch of inbound MQTT messages into one database transaction and the live events it causes."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, select

from fleet_service.commands_state import apply_result
from fleet_service.ingest import telemetry_path
from fleet_service.ingest.acks import AckBook
from fleet_service.ingest.badlog import BadMessageLog
from fleet_service.ingest.telemetry_path import TELEMETRY_KINDS
from fleet_service.models import Command, Device, LogRecord, MetricSample, device_status
from fleet_service.telemetry import Registry
from protocol import ProtocolError
from protocol.payloads import (
    Birth,
    CommandResult,
    ConfigReported,
    Death,
    Heartbeat,
    LogBatch,
    Metrics,
    decode,
    salvage_ack_id,
)
from protocol.topics import Kind, parse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inbound:
    topic: str
    payload: bytes
    received_ms: int
    retained: bool = False


@dataclass(frozen=True)
class Outcome:
    """An event to publish once the transaction committed."""

    type: str
    device_id: str
    data: dict[str, Any]


class DatabaseUnavailable(Exception):
    """The database refused the whole batch; retry it later, nothing is dropped."""


@dataclass
class Persisted:
    """What a committed batch causes: live events, and the acks owed to units."""

    outcomes: list[Outcome] = field(default_factory=list)
    acks: AckBook = field(default_factory=AckBook)


@dataclass
class _Write:
    """What one transaction collects: rows to insert in bulk, and drops/acks that count only if it commits."""

    logs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    drops: list[tuple[str, str, str]] = field(default_factory=list)  # (reason, source, detail)
    acks: AckBook = field(default_factory=AckBook)
    outcomes: list[Outcome] = field(default_factory=list)
    clock: telemetry_path.ClockWindow = telemetry_path.CLOCK
    restamped: int = 0


class Persister:
    def __init__(self, engine: Engine, registry: Registry, badlog: BadMessageLog,
                 clock: telemetry_path.ClockWindow = telemetry_path.CLOCK) -> None:
        self._clock = clock
        self._engine = engine
        self._registry = registry
        self._bad = badlog
        self._dialect = engine.dialect.name

    def persist(self, batch: list[Inbound]) -> Persisted:
        """Write a batch in one transaction; if it fails for any reason but an unreachable database, write message
        by message, so one bad message costs exactly itself (counted under its reason), never its neighbours."""
        result = Persisted()
        decoded = list(self._decode(batch, result.acks))
        if not decoded:
            return result
        try:
            self._commit(self._write(decoded), result)
            return result
        except OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        except Exception as exc:
            self._registry.inc("fleet_ingest_db_errors_total")
            log.warning("batch of %d failed (%s); retrying one by one", len(decoded), exc.__class__.__name__)
        for item in decoded:
            device_id, _, payload, _ = item
            try:
                self._commit(self._write([item]), result)
            except OperationalError as exc:
                raise DatabaseUnavailable(str(exc)) from exc
            except DBAPIError as exc:
                self._bad.drop("database_rejected", device_id, str(exc.orig))
                result.acks.rejected(device_id, getattr(payload, "ack_id", None), "refused by the database")
            except Exception as exc:  # a bug in a handler: this message only, loudly
                self._bad.drop("internal_error", device_id, f"{exc.__class__.__name__}: {exc}")
                log.debug("message from %s failed", device_id, exc_info=True)
                result.acks.rejected(device_id, getattr(payload, "ack_id", None), "internal error")
        return result

    def _commit(self, write: _Write, result: Persisted) -> None:
        """Account for a transaction that committed."""
        for reason, source, detail in write.drops:
            self._bad.drop(reason, source, detail)
        result.acks.merge(write.acks)
        result.outcomes.extend(write.outcomes)
        if write.restamped:
            self._registry.inc("fleet_ingest_restamped_total", write.restamped)

    def _decode(self, batch: list[Inbound], acks: AckBook) -> Iterable[tuple[str, Kind, Any, Inbound]]:
        received: Counter[str] = Counter()
        try:
            for msg in batch:
                try:
                    topic = parse(msg.topic)
                except ProtocolError as exc:
                    self._bad.drop("bad_topic", msg.topic, str(exc))
                    continue
                received[topic.kind.value] += 1
                try:
                    payload = decode(topic.kind, msg.payload)
                except Exception as exc:  # ProtocolError, or anything a decoder bug lets through: this message only
                    detail = str(exc) if isinstance(exc, ProtocolError) else f"{exc.__class__.__name__} while decoding"
                    reason = "oversized" if "exceeds" in detail else "malformed"
                    self._bad.drop(reason, topic.device_id, f"{topic.kind.value}: {detail}")
                    acks.rejected(topic.device_id, salvage_ack_id(msg.payload), f"{reason}: {detail}")
                    continue
                yield topic.device_id, topic.kind, payload, msg
        finally:
            for kind_name, count in received.items():  # one locked update per kind, not per message
                self._registry.inc("fleet_ingest_messages_total", count, kind=kind_name)

    def _write(self, items: list[tuple[str, Kind, Any, Inbound]]) -> _Write:
        write = _Write(clock=self._clock)
        outcomes: list[Outcome] = []
        persisted: Counter[str] = Counter()
        with Session(self._engine, expire_on_commit=False) as session:
            ids = {device_id for device_id, *_ in items}
            # Units that sent only telemetry take the narrow path; the others keep every message on ORM rows.
            orm_ids = {device_id for device_id, kind, *_ in items if kind not in TELEMETRY_KINDS}
            states = telemetry_path.load_states(session, ids - orm_ids)
            devices = {d.id: d for d in session.exec(select(Device).where(Device.id.in_(orm_ids))).all()} \
                if orm_ids else {}
            touched: set[str] = set()
            for device_id, kind, payload, msg in items:
                state = states.get(device_id)
                if state is not None:
                    events = _TELEMETRY[kind](state, payload, msg.received_ms, write)
                    outcomes.extend(Outcome(t, device_id, data) for t, data in events)
                elif (device := devices.get(device_id)) is not None:
                    touched.add(device_id)
                    outcomes.extend(_HANDLERS[kind](self, session, device, payload, msg, write))
                else:
                    write.drops.append(("unknown_device", device_id, f"{kind.value} from a unit that is not enrolled"))
                    continue
                persisted[kind.value] += 1
            if write.logs:
                self._insert_logs(session, list(write.logs.values()))
            if write.samples:
                session.execute(MetricSample.__table__.insert(), write.samples)
            telemetry_path.write_updates(session, states)
            write.restamped += sum(state.restamped for state in states.values())
            for device_id in touched:
                session.add(devices[device_id])
            session.commit()
        for kind_name, count in persisted.items():
            self._registry.inc("fleet_ingest_persisted_total", count, kind=kind_name)
        write.outcomes = outcomes
        return write

    def _insert_logs(self, session: Session, rows: list[dict[str, Any]]) -> None:
        table = LogRecord.__table__
        dialect_insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        stmt = dialect_insert(table).on_conflict_do_nothing(index_elements=["device_id", "rec_id"])
        session.execute(stmt, rows)

    # -- one handler per topic kind --------------------------------------------------------------------------

    def _state(self, session, device: Device, payload, msg: Inbound, write: _Write) -> list[Outcome]:
        now = msg.received_ms
        if isinstance(payload, Birth):
            was_online, old_session = device.online, device.session
            device.session = payload.session
            device.agent_version = payload.agent_version
            device.software_version = payload.software_version or device.software_version
            device.boot_id = payload.boot_id
            device.last_seen = now
            if was_online and old_session == payload.session:
                return []  # a re-delivered retained birth changes nothing
            device.online = True
            device.online_changed_at = now
            device.offline_reason = None
            return [Outcome("presence", device.id, {**_presence(device), "session": payload.session})]
        assert isinstance(payload, Death)
        if not device.online or payload.session != device.session:
            return []  # a late Will of an older session must not kill the current one
        device.online = False
        device.online_changed_at = now
        device.offline_reason = "disconnected"
        return [Outcome("presence", device.id, _presence(device))]

    def _telemetry(self, session, device: Device, payload, msg: Inbound, write: _Write) -> list[Outcome]:
        """Telemetry of a unit that also sent other kinds in this batch: same rules, applied to its ORM row."""
        state = telemetry_path.UnitState.of(device)
        events = _TELEMETRY[_KIND_OF[type(payload)]](state, payload, msg.received_ms, write)
        state.apply_to(device)
        write.restamped += state.restamped
        return [Outcome(t, device.id, data) for t, data in events]

    def _result(self, session, device: Device, res: CommandResult, msg: Inbound, write: _Write) -> list[Outcome]:
        device.last_seen = msg.received_ms
        cmd = session.get(Command, res.id)
        if cmd is None or cmd.device_id != device.id:
            write.drops.append(("unknown_command", device.id, f"result for unknown command {res.id}"))
            write.acks.rejected(device.id, res.ack_id, f"unknown command {res.id}")
            return []
        event = apply_result(session, cmd, res, msg.received_ms)
        write.acks.stored(device.id, res.ack_id)  # a duplicate or superseded status is stored as far as it matters
        return [Outcome("command", device.id, event)] if event else []

    def _config(self, session, device: Device, rep: ConfigReported, msg: Inbound, write: _Write) -> list[Outcome]:
        device.last_seen = msg.received_ms
        write.acks.stored(device.id, rep.ack_id)
        if rep.version < (device.reported_version or 0):
            return []  # a resent report of an older version must not undo a newer one
        device.reported_version = rep.version
        device.config_status = rep.status
        device.config_error = rep.error if rep.status == "failed" else None
        if rep.status == "applied":
            device.reported_config = rep.config
        return [Outcome("config", device.id, {"device_id": device.id, "reported_version": rep.version,
                                              "desired_version": device.desired_version, "status": rep.status,
                                              "error": device.config_error,
                                              "in_sync": device_status(device)["config_in_sync"]})]


def _presence(device: Device) -> dict[str, Any]:
    return {"device_id": device.id, "online": device.online, "reason": device.offline_reason,
            "last_seen": device.last_seen, "software_version": device.software_version}


_HANDLERS = {
    Kind.STATE: Persister._state,
    Kind.HEARTBEAT: Persister._telemetry,
    Kind.METRICS: Persister._telemetry,
    Kind.LOGS: Persister._telemetry,
    Kind.CMD_RESULT: Persister._result,
    Kind.CONFIG_REPORTED: Persister._config,
}
_TELEMETRY = {
    Kind.HEARTBEAT: lambda state, hb, received, write: telemetry_path.heartbeat(state, hb, received),
    Kind.METRICS: lambda state, m, received, write: telemetry_path.metrics(state, m, received, write.samples,
                                                                         write.clock),
    Kind.LOGS: lambda state, batch, received, write: _logs(state, batch, received, write),
}


def _logs(state: telemetry_path.UnitState, batch: LogBatch, received: int, write: _Write) -> list:
    events = telemetry_path.logs(state, batch, received, write.logs, write.clock)
    write.acks.stored(state.id, batch.ack_id)  # records already stored are skipped by the insert: still stored
    return events


_KIND_OF = {Heartbeat: Kind.HEARTBEAT, Metrics: Kind.METRICS, LogBatch: Kind.LOGS}
