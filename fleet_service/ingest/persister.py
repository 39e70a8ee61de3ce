"""Turn a batch of inbound MQTT messages into one database transaction and the live events it causes."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import select as core_select
from sqlalchemy import tuple_
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, col, select

from fleet_service.commands.models import Command
from fleet_service.commands.state import apply_results
from fleet_service.db.bulk import execute_rows, insert_rows, one_of
from fleet_service.db.core import table_of
from fleet_service.devices.models import Device, LogRecord, device_status
from fleet_service.errors import Unavailable
from fleet_service.ingest import telemetry_path
from fleet_service.ingest.acks import AckBook
from fleet_service.ingest.badlog import BadMessageLog
from fleet_service.ingest.telemetry_path import TELEMETRY_KINDS
from fleet_service.metrics import rollups
from fleet_service.prometheus import Registry
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
NARROW_KINDS = TELEMETRY_KINDS | {Kind.CMD_RESULT}  # written without loading the unit's ORM row


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


class DatabaseUnavailableError(Unavailable):
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
    restamped_logs: set[tuple[str, str]] = field(default_factory=set)  # their ts is the receive time: not a key
    samples: list[dict[str, Any]] = field(default_factory=list)
    drops: list[tuple[str, str, str]] = field(default_factory=list)  # (reason, source, detail)
    acks: AckBook = field(default_factory=AckBook)
    outcomes: list[Outcome] = field(default_factory=list)
    clock: telemetry_path.ClockWindow = telemetry_path.CLOCK
    restamped: int = 0
    commands: dict[str, Command] = field(default_factory=dict)  # the commands this batch reports on, read at once
    reports: list[tuple[str, CommandResult, int]] = field(default_factory=list)  # (unit, report, received), in order


class Persister:
    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        badlog: BadMessageLog,
        clock: telemetry_path.ClockWindow = telemetry_path.CLOCK,
    ) -> None:
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
            raise DatabaseUnavailableError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 (any failure: the one-by-one pass below isolates its cause)
            self._registry.inc("fleet_ingest_db_errors_total")
            log.warning("batch of %d failed (%s); retrying one by one", len(decoded), exc.__class__.__name__)
        for item in decoded:
            device_id, _, payload, _ = item
            try:
                self._commit(self._write([item]), result)
            except OperationalError as exc:
                raise DatabaseUnavailableError(str(exc)) from exc
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
                # ProtocolError, or anything a decoder bug lets through: this message only
                except Exception as exc:  # noqa: BLE001 (a unit's bytes must never break the batch)
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
            # Units that sent only telemetry and command reports take the narrow path; the others keep every
            # message on ORM rows.
            orm_ids = {device_id for device_id, kind, *_ in items if kind not in NARROW_KINDS}
            # A unit that sent only command reports is not read: its reports find their commands (which name
            # their unit), and all it gets written is `last_seen`. One round trip less on a command's way back.
            report_only = ids - {device_id for device_id, kind, *_ in items if kind is not Kind.CMD_RESULT}
            states = telemetry_path.load_states(session, ids - orm_ids - report_only)
            states.update((unit, telemetry_path.UnitState(unit, True, "")) for unit in report_only)
            devices = (
                {d.id: d for d in session.exec(select(Device).where(col(Device.id).in_(orm_ids))).all()}
                if orm_ids
                else {}
            )
            conn = session.connection()
            if reported := {payload.id for _, kind, payload, _ in items if kind is Kind.CMD_RESULT}:
                write.commands = _read_commands(conn, reported)
            touched: set[str] = set()
            # Handlers only add rows and run their own compare-and-set statements: nothing needs flushing before
            # a read, so the new rows go in together at the commit instead of one round trip before each read.
            with session.no_autoflush:
                for device_id, kind, payload, msg in items:
                    state = states.get(device_id)
                    if state is not None:
                        if kind is Kind.CMD_RESULT:
                            state.values["last_seen"] = msg.received_ms
                            write.reports.append((device_id, payload, msg.received_ms))
                        else:
                            events = _TELEMETRY[kind](state, payload, msg.received_ms, write)
                            outcomes.extend(Outcome(t, device_id, data) for t, data in events)
                    elif (device := devices.get(device_id)) is not None:
                        touched.add(device_id)
                        outcomes.extend(_HANDLERS[kind](self, conn, device, payload, msg, write))
                    else:
                        write.drops.append(
                            ("unknown_device", device_id, f"{kind.value} from a unit that is not enrolled")
                        )
                        continue
                    persisted[kind.value] += 1
            outcomes.extend(_apply_reports(conn, write))
            if write.logs:
                self._insert_logs(session, write)
            rollups.store(session, write.samples)  # raw rows, and the rollups of those not stored before
            telemetry_path.write_updates(session, states)
            write.restamped += sum(state.restamped for state in states.values())
            for device_id in touched:
                session.add(devices[device_id])
            session.commit()
        for kind_name, count in persisted.items():
            self._registry.inc("fleet_ingest_persisted_total", count, kind=kind_name)
        write.outcomes = outcomes
        return write

    def _insert_logs(self, session: Session, write: _Write) -> None:
        """Records already stored are skipped by the unique (device_id, rec_id, ts); one whose ts was replaced by
        this delivery's receive time would not match its first copy, so it is looked up by (device_id, rec_id)."""
        rows = write.logs
        if write.restamped_logs:
            keys = sorted(write.restamped_logs)
            query = select(col(LogRecord.device_id), col(LogRecord.rec_id)).where(
                tuple_(col(LogRecord.device_id), col(LogRecord.rec_id)).in_(keys)
            )
            stored = {(r[0], r[1]) for r in session.execute(query)}
            rows = {key: row for key, row in rows.items() if key not in stored}
        if rows:
            execute_rows(session, _log_insert(self._dialect), list(rows.values()))

    # -- one handler per topic kind --------------------------------------------------------------------------

    def _state(self, _session, device: Device, payload, msg: Inbound, _write: _Write) -> list[Outcome]:
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

    def _telemetry(self, _session, device: Device, payload, msg: Inbound, write: _Write) -> list[Outcome]:
        """Telemetry of a unit that also sent other kinds in this batch: same rules, applied to its ORM row."""
        state = telemetry_path.UnitState.of(device)
        events = _TELEMETRY[_KIND_OF[type(payload)]](state, payload, msg.received_ms, write)
        state.apply_to(device)
        write.restamped += state.restamped
        return [Outcome(t, device.id, data) for t, data in events]

    def _result(self, _conn, device: Device, res: CommandResult, msg: Inbound, write: _Write) -> list[Outcome]:
        device.last_seen = msg.received_ms
        write.reports.append((device.id, res, msg.received_ms))  # applied with the batch's others (_apply_reports)
        return []

    def _config(self, _session, device: Device, rep: ConfigReported, msg: Inbound, write: _Write) -> list[Outcome]:
        device.last_seen = msg.received_ms
        write.acks.stored(device.id, rep.ack_id)
        if rep.version < (device.reported_version or 0):
            return []  # a resent report of an older version must not undo a newer one
        device.reported_version = rep.version
        device.config_status = rep.status
        device.config_error = rep.error if rep.status == "failed" else None
        if rep.status == "applied":
            device.reported_config = rep.config
        return [
            Outcome(
                "config",
                device.id,
                {
                    "device_id": device.id,
                    "reported_version": rep.version,
                    "desired_version": device.desired_version,
                    "status": rep.status,
                    "error": device.config_error,
                    "in_sync": device_status(device)["config_in_sync"],
                },
            )
        ]


def _read_commands(conn: Connection, ids: set[str]) -> dict[str, Command]:
    """The reported commands as plain objects (no session tracks them: their moves are compare-and-set
    statements of their own, never a flush)."""
    rows = conn.execute(_commands_read(conn.dialect.name), {"ids": sorted(ids)}).mappings()
    return {row["id"]: Command(**row) for row in rows}


@lru_cache(maxsize=2)
def _commands_read(dialect: str) -> Any:
    table = table_of(Command)
    return core_select(table).where(one_of(dialect, table.c.id, "ids"))


def _apply_reports(conn: Connection, write: _Write) -> list[Outcome]:
    """The batch's command reports, each command's together and in arrival order (`apply_results`)."""
    by_command: dict[str, list[tuple[str, CommandResult, int]]] = {}
    for device_id, res, received_ms in write.reports:
        cmd = write.commands.get(res.id)
        if cmd is None or cmd.device_id != device_id:
            write.drops.append(("unknown_command", device_id, f"result for unknown command {res.id}"))
            write.acks.rejected(device_id, res.ack_id, f"unknown command {res.id}")
            continue
        by_command.setdefault(res.id, []).append((device_id, res, received_ms))
    outcomes: list[Outcome] = []
    for command_id, reports in sorted(by_command.items()):  # one lock order for every writer: no deadlocks
        events = apply_results(conn, write.commands[command_id], [(res, received) for _, res, received in reports])
        for (device_id, res, _), event in zip(reports, events, strict=True):
            write.acks.stored(device_id, res.ack_id)  # a duplicate or superseded status is stored as far as it matters
            if event:
                outcomes.append(Outcome("command", device_id, event))
    return outcomes


@lru_cache(maxsize=2)
def _log_insert(dialect: str) -> Any:
    stmt = insert_rows(dialect, table_of(LogRecord), list(telemetry_path.LOG_COLUMNS))
    return stmt.on_conflict_do_nothing(index_elements=["device_id", "rec_id", "ts"])


def _presence(device: Device) -> dict[str, Any]:
    return {
        "device_id": device.id,
        "online": device.online,
        "reason": device.offline_reason,
        "last_seen": device.last_seen,
        "software_version": device.software_version,
    }


_HANDLERS: dict[Kind, Callable[..., list[Outcome]]] = {
    Kind.STATE: Persister._state,
    Kind.HEARTBEAT: Persister._telemetry,
    Kind.METRICS: Persister._telemetry,
    Kind.LOGS: Persister._telemetry,
    Kind.CMD_RESULT: Persister._result,
    Kind.CONFIG_REPORTED: Persister._config,
}
_TELEMETRY = {
    Kind.HEARTBEAT: lambda state, hb, received, _write: telemetry_path.heartbeat(state, hb, received),
    Kind.METRICS: lambda state, m, received, write: telemetry_path.metrics(
        state, m, received, write.samples, write.clock
    ),
    Kind.LOGS: lambda state, batch, received, write: _logs(state, batch, received, write),
}


def _logs(state: telemetry_path.UnitState, batch: LogBatch, received: int, write: _Write) -> list:
    events = telemetry_path.logs(state, batch, received, write.logs, write.clock, write.restamped_logs)
    write.acks.stored(state.id, batch.ack_id)  # records already stored are skipped by the insert: still stored
    return events


_KIND_OF: dict[type, Kind] = {Heartbeat: Kind.HEARTBEAT, Metrics: Kind.METRICS, LogBatch: Kind.LOGS}
