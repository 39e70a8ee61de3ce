"""Durable commands: store first, publish QoS 1, re-publish on birth, expire and time out in the background."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.commands_state import FINAL, PENDING, transition
from fleet_service.events import EventBus
from fleet_service.ingest.link import BrokerUnavailable, MqttLink
from fleet_service.models import Command, CommandEvent, Device, command_public
from protocol.ids import new_id, now_ms
from protocol.payloads import COMMAND_NAMES, encode
from protocol.payloads import Command as CommandMessage
from protocol.topics import Kind, topic

log = logging.getLogger(__name__)
DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 30 * 24 * 3600
DEFAULT_TIMEOUT_S = {"update": 1800, "reboot": 600}


class CommandError(ValueError):
    """Bad command input; the message is shown to the caller."""


def validate(name: str, args: dict[str, Any]) -> dict[str, Any]:
    if name not in COMMAND_NAMES:
        raise CommandError(f"unknown command {name!r}; valid names: {', '.join(COMMAND_NAMES)}")
    if not isinstance(args, dict):
        raise CommandError("args must be a JSON object")
    if name == "update":
        ref = args.get("ref")
        if not isinstance(ref, str) or not ref.strip() or len(ref) > 200 or ref.startswith("-"):
            raise CommandError("update needs args.ref: a branch, tag or commit (a non-empty string)")
        args = {**args, "ref": ref.strip()}
    if name == "restart" and "units" in args:
        units = args["units"]
        if not isinstance(units, list) or not all(isinstance(u, str) for u in units):
            raise CommandError("restart args.units must be a list of unit names")
    return args


class Dispatcher:
    def __init__(self, engine: Engine, link: MqttLink, bus: EventBus) -> None:
        self._engine = engine
        self._link = link
        self._bus = bus

    def _message(self, cmd: Command) -> bytes:
        return encode(CommandMessage(id=cmd.id, name=cmd.name, args=cmd.args, ts=cmd.created_at,
                                     expires_at=cmd.expires_at))

    async def create(self, device_id: str, name: str, args: dict[str, Any], *, ttl_s: int | None = None,
                     timeout_s: int | None = None, created_by: str = "", rollout_id: str | None = None) -> Command:
        args = validate(name, args or {})
        ttl = DEFAULT_TTL_S if ttl_s is None else ttl_s
        if not 1 <= ttl <= MAX_TTL_S:
            raise CommandError(f"ttl_s must be between 1 and {MAX_TTL_S}")
        timeout = timeout_s or DEFAULT_TIMEOUT_S.get(name, 300)
        now = now_ms()
        cmd = Command(id=new_id(), device_id=device_id, name=name, args=args, created_at=now, updated_at=now,
                      expires_at=now + ttl * 1000, timeout_s=timeout, created_by=created_by, rollout_id=rollout_id)
        await asyncio.to_thread(self._store_new, cmd)
        self._bus.publish("command", command_public(cmd), device_id)
        await self._send(cmd)
        return cmd

    def _store_new(self, cmd: Command) -> None:
        with Session(self._engine, expire_on_commit=False) as s:
            s.add(cmd)
            s.add(CommandEvent(command_id=cmd.id, status=cmd.status, ts=cmd.created_at))
            s.commit()

    async def _send(self, cmd: Command) -> None:
        try:
            await self._link.publish(topic(cmd.device_id, Kind.CMD), self._message(cmd), qos=1)
        except BrokerUnavailable as exc:
            log.info("command %s stays queued: %s", cmd.id, exc)
            return
        changed = await asyncio.to_thread(self._mark, cmd.id, "sent")
        if changed:
            cmd.status = changed.status
            self._bus.publish("command", command_public(changed), cmd.device_id)

    def _mark(self, command_id: str, status: str) -> Command | None:
        with Session(self._engine, expire_on_commit=False) as s:
            cmd = s.get(Command, command_id)
            if cmd is None or not transition(s, cmd, status, now_ms()):
                return None
            s.commit()
            return cmd

    async def republish_pending(self, device_id: str) -> int:
        """Send again every unexpired command the unit has not taken (it dedupes by id)."""
        now = now_ms()

        def load() -> list[Command]:
            with Session(self._engine, expire_on_commit=False) as s:
                q = select(Command).where(Command.device_id == device_id, col(Command.status).in_(PENDING),
                                          Command.expires_at > now).order_by(Command.created_at)
                return list(s.exec(q).all())

        pending = await asyncio.to_thread(load)
        for cmd in pending:
            await self._send(cmd) if cmd.status == "queued" else await self._resend(cmd)
        return len(pending)

    async def _resend(self, cmd: Command) -> None:
        try:
            await self._link.publish(topic(cmd.device_id, Kind.CMD), self._message(cmd), qos=1)
        except BrokerUnavailable:
            return

    async def cancel(self, command_id: str) -> Command:
        def do() -> Command:
            with Session(self._engine, expire_on_commit=False) as s:
                cmd = s.get(Command, command_id)
                if cmd is None:
                    raise LookupError(command_id)
                if cmd.status not in PENDING:
                    raise CommandError(f"command is {cmd.status}; only queued or sent commands can be canceled")
                transition(s, cmd, "canceled", now_ms())
                s.commit()
                return cmd

        cmd = await asyncio.to_thread(do)
        self._bus.publish("command", command_public(cmd), cmd.device_id)
        return cmd

    def sweep(self) -> list[Command]:
        """Expire untaken commands past their TTL; time out taken ones past their timeout."""
        now = now_ms()
        changed: list[Command] = []
        with Session(self._engine, expire_on_commit=False) as s:
            for cmd in s.exec(select(Command).where(col(Command.status).in_(PENDING), Command.expires_at <= now)):
                if transition(s, cmd, "expired", now):
                    changed.append(cmd)
            taken = select(Command).where(col(Command.status).in_(("accepted", "running")))
            for cmd in s.exec(taken):
                started = cmd.started_at or cmd.updated_at
                if started + cmd.timeout_s * 1000 <= now and transition(s, cmd, "timed_out", now):
                    cmd.output = cmd.output or f"no result within {cmd.timeout_s} s"
                    changed.append(cmd)
            s.commit()
        return changed

    async def run_sweeper(self, interval_s: float = 2.0) -> None:
        while True:
            try:
                for cmd in await asyncio.to_thread(self.sweep):
                    self._bus.publish("command", command_public(cmd), cmd.device_id)
            except Exception:
                log.exception("command sweep failed")
            await asyncio.sleep(interval_s)


def device_exists(engine: Engine, device_id: str) -> bool:
    with Session(engine) as s:
        return s.get(Device, device_id) is not None


__all__ = ["CommandError", "Dispatcher", "FINAL", "validate", "device_exists"]
