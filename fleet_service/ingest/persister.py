"""Turn a batch of inbound MQTT messages into one database transaction and the live events it causes."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, select

from fleet_service.commands_state import apply_result
from fleet_service.ingest.badlog import BadMessageLog
from fleet_service.models import LEVEL_NUMBERS, Command, Device, LogRecord, MetricSample, device_status
from fleet_service.telemetry import Registry
from protocol import ProtocolError
from protocol.payloads import Birth, CommandResult, ConfigReported, Death, Heartbeat, LogBatch, Metrics, decode
from protocol.topics import Kind, parse

log = logging.getLogger(__name__)
METRIC_COLUMNS = ("cpu_percent", "mem_percent", "mem_used_bytes", "disk_percent", "disk_free_bytes", "load1",
                  "temp_c", "net_rx_bytes", "net_tx_bytes")


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


class Persister:
    def __init__(self, engine: Engine, registry: Registry, badlog: BadMessageLog) -> None:
        self._engine = engine
        self._registry = registry
        self._bad = badlog
        self._dialect = engine.dialect.name

    def persist(self, batch: list[Inbound]) -> list[Outcome]:
        """Write a batch in one transaction; on a data error, retry message by message so one cannot sink many."""
        decoded = list(self._decode(batch))
        if not decoded:
            return []
        try:
            return self._write(decoded)
        except OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        except DBAPIError as exc:
            self._registry.inc("fleet_ingest_db_errors_total")
            log.warning("batch of %d failed (%s); retrying one by one", len(decoded), exc.__class__.__name__)
        outcomes: list[Outcome] = []
        for item in decoded:
            try:
                outcomes.extend(self._write([item]))
            except OperationalError as exc:
                raise DatabaseUnavailable(str(exc)) from exc
            except DBAPIError as exc:
                self._bad.drop("database_rejected", item[0], str(exc.orig))
        return outcomes

    def _decode(self, batch: list[Inbound]) -> Iterable[tuple[str, Kind, Any, Inbound]]:
        for msg in batch:
            try:
                topic = parse(msg.topic)
            except ProtocolError as exc:
                self._bad.drop("bad_topic", msg.topic, str(exc))
                continue
            self._registry.inc("fleet_ingest_messages_total", kind=topic.kind.value)
            try:
                payload = decode(topic.kind, msg.payload)
            except ProtocolError as exc:
                reason = "oversized" if "exceeds" in str(exc) else "malformed"
                self._bad.drop(reason, topic.device_id, f"{topic.kind.value}: {exc}")
                continue
            yield topic.device_id, topic.kind, payload, msg

    def _write(self, items: list[tuple[str, Kind, Any, Inbound]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with Session(self._engine, expire_on_commit=False) as session:
            ids = {device_id for device_id, *_ in items}
            devices = {d.id: d for d in session.exec(select(Device).where(Device.id.in_(ids))).all()}
            logs: dict[tuple[str, str], dict[str, Any]] = {}
            samples: list[dict[str, Any]] = []
            touched: set[str] = set()
            for device_id, kind, payload, msg in items:
                device = devices.get(device_id)
                if device is None:
                    self._bad.drop("unknown_device", device_id, f"{kind.value} from a unit that is not enrolled")
                    continue
                touched.add(device_id)
                handler = _HANDLERS[kind]
                outcomes.extend(handler(self, session, device, payload, msg, logs, samples))
                self._registry.inc("fleet_ingest_persisted_total", kind=kind.value)
            if logs:
                self._insert_logs(session, list(logs.values()))
            if samples:
                session.execute(MetricSample.__table__.insert(), samples)
            for device_id in touched:
                session.add(devices[device_id])
            session.commit()
        return outcomes

    def _insert_logs(self, session: Session, rows: list[dict[str, Any]]) -> None:
        table = LogRecord.__table__
        dialect_insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        stmt = dialect_insert(table).on_conflict_do_nothing(index_elements=["device_id", "rec_id"])
        session.execute(stmt, rows)

    # -- one handler per topic kind --------------------------------------------------------------------------

    def _state(self, session, device: Device, payload, msg: Inbound, logs, samples) -> list[Outcome]:
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

    def _heartbeat(self, session, device: Device, hb: Heartbeat, msg: Inbound, logs, samples) -> list[Outcome]:
        device.last_seen = msg.received_ms
        device.hostname = hb.hostname
        device.ips = list(hb.ips)
        device.uptime_s = hb.uptime_s
        device.heartbeat_seq = hb.seq
        device.software_version = hb.software_version or device.software_version
        device.agent_version = hb.agent_version or device.agent_version
        out = []
        if not device.online:  # alive after a presence timeout (or a missed birth)
            device.online = True
            device.online_changed_at = msg.received_ms
            device.offline_reason = None
            out.append(Outcome("presence", device.id, _presence(device)))
        out.append(Outcome("heartbeat", device.id, {"device_id": device.id, "seq": hb.seq, "uptime_s": hb.uptime_s,
                                                     "last_seen": device.last_seen}))
        return out

    def _metrics(self, session, device: Device, m: Metrics, msg: Inbound, logs, samples) -> list[Outcome]:
        device.last_seen = msg.received_ms
        row = {c: getattr(m, c) for c in METRIC_COLUMNS}
        values = {k: v for k, v in row.items() if v is not None}
        device.last_metrics = {**values, "ts": m.ts, "services": m.services, "extra": m.extra}
        samples.append({"device_id": device.id, "ts": m.ts, **row, "services": m.services, "extra": m.extra})
        return [Outcome("metrics", device.id, {"device_id": device.id, **device.last_metrics})]

    def _logs(self, session, device: Device, batch: LogBatch, msg: Inbound, logs, samples) -> list[Outcome]:
        device.last_seen = msg.received_ms
        if batch.dropped:
            device.logs_dropped = (device.logs_dropped or 0) + batch.dropped
        out = []
        for r in batch.records:
            key = (device.id, r.id)
            if key in logs:
                continue
            logs[key] = {"device_id": device.id, "rec_id": r.id, "ts": r.ts, "level": r.level,
                         "level_no": LEVEL_NUMBERS[r.level], "source": r.source, "msg": r.msg}
            out.append(Outcome("log", device.id, {"device_id": device.id, "id": r.id, "ts": r.ts, "level": r.level,
                                                  "source": r.source, "msg": r.msg}))
        return out

    def _result(self, session, device: Device, res: CommandResult, msg: Inbound, logs, samples) -> list[Outcome]:
        device.last_seen = msg.received_ms
        cmd = session.get(Command, res.id)
        if cmd is None or cmd.device_id != device.id:
            self._bad.drop("unknown_command", device.id, f"result for unknown command {res.id}")
            return []
        event = apply_result(session, cmd, res, msg.received_ms)
        return [Outcome("command", device.id, event)] if event else []

    def _config(self, session, device: Device, rep: ConfigReported, msg: Inbound, logs, samples) -> list[Outcome]:
        device.last_seen = msg.received_ms
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
    Kind.HEARTBEAT: Persister._heartbeat,
    Kind.METRICS: Persister._metrics,
    Kind.LOGS: Persister._logs,
    Kind.CMD_RESULT: Persister._result,
    Kind.CONFIG_REPORTED: Persister._config,
}
