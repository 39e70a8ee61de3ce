"""Durable commands: store first, publish QoS 1, re-publish on birth, expire and time out in the background."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.broker_link.base import BrokerLink, BrokerUnavailable
from fleet_service.commands.models import Command, CommandEvent, command_public
from fleet_service.commands.state import FINAL, PENDING, TAKEN, transition
from fleet_service.commands.writes import mark_sent, mark_sent_on_loop, store_for_unit, store_for_unit_on_loop
from fleet_service.db.engine import once_more_on_disconnect
from fleet_service.db.on_loop import LoopDatabase
from fleet_service.errors import Conflict, Invalid, NotFound
from fleet_service.live.bus import EventBus
from protocol.ids import new_id, now_ms
from protocol.payloads import COMMAND_NAMES, encode
from protocol.payloads import Command as CommandMessage
from protocol.refs import is_git_ref
from protocol.topics import Kind, topic

log = logging.getLogger(__name__)
DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 30 * 24 * 3600
MAX_TIMEOUT_S = 24 * 3600
DEFAULT_TIMEOUT_S = {"update": 1800, "reboot": 600}
UNIT_RE = re.compile(r"^[A-Za-z0-9@_.:\\-]{1,200}$")
RESEND_AFTER_MS = 5_000  # a command still `queued` this long after creation missed its publish: send it again
SEND_CONCURRENCY = 64
ChangeListener = Callable[[Command], None]


class CommandError(Invalid):
    """Bad command input; the message is shown to the caller."""


def validate(name: str, args: dict[str, Any]) -> dict[str, Any]:
    if name not in COMMAND_NAMES:
        raise CommandError(f"unknown command {name!r}; valid names: {', '.join(COMMAND_NAMES)}")
    if not isinstance(args, dict):
        raise CommandError("args must be a JSON object")
    if name == "update":
        ref = args.get("ref")
        ref = ref.strip() if isinstance(ref, str) else ref
        if not is_git_ref(ref):  # the agent checks the same rule: a bad ref is a 422 here, not a rejection there
            raise CommandError(
                "update needs args.ref: a branch, tag or commit name (letters, digits and ._/@+-, "
                "not starting with - and without ..)"
            )
        args = {**args, "ref": ref}
    if name == "restart":
        if "units" in args:
            raise CommandError("restart takes args.unit (one configured unit name), not args.units")
        unit = args.get("unit")
        if unit is not None and (not isinstance(unit, str) or not UNIT_RE.fullmatch(unit)):
            raise CommandError("restart args.unit must be the name of one configured unit, e.g. recorder.service")
    if name == "config_update" and "config" in args and not isinstance(args["config"], dict):
        raise CommandError("config_update args.config must be a JSON object")
    return args


def check_limits(ttl_s: int | None, timeout_s: int | None) -> None:
    if ttl_s is not None and not 1 <= ttl_s <= MAX_TTL_S:
        raise CommandError(f"ttl_s must be between 1 and {MAX_TTL_S}")
    if timeout_s is not None and not 1 <= timeout_s <= MAX_TIMEOUT_S:
        raise CommandError(f"timeout_s must be between 1 and {MAX_TIMEOUT_S}")


def build(
    device_id: str,
    name: str,
    args: dict[str, Any] | None,
    *,
    ttl_s: int | None = None,
    timeout_s: int | None = None,
    created_by: str = "",
    rollout_id: str | None = None,
    now: int | None = None,
) -> Command:
    """A validated, not yet stored command in state `queued`."""
    args = validate(name, args or {})
    check_limits(ttl_s, timeout_s)
    now = now_ms() if now is None else now
    ttl = DEFAULT_TTL_S if ttl_s is None else ttl_s
    return Command(
        id=new_id(),
        device_id=device_id,
        name=name,
        args=args,
        created_at=now,
        updated_at=now,
        expires_at=now + ttl * 1000,
        timeout_s=timeout_s or DEFAULT_TIMEOUT_S.get(name, 300),
        created_by=created_by[:100],
        rollout_id=rollout_id,
    )


def store_new(session: Session, cmd: Command) -> None:
    session.add(cmd)
    session.add(CommandEvent(command_id=cmd.id, status=cmd.status, ts=cmd.created_at))


class Dispatcher:
    def __init__(self, engine: Engine, link: BrokerLink, bus: EventBus, loop_db: LoopDatabase | None = None) -> None:
        self._engine = engine
        self._loop_db = loop_db  # PostgreSQL: a command's two writes are awaited by the loop, not a worker thread
        self._link = link
        self._bus = bus
        self.listeners: list[ChangeListener] = []  # told of every status change made here (not by ingest)
        self.background: set[asyncio.Task] = set()  # re-publishes in flight (cancelled on stop)

    def _message(self, cmd: Command) -> bytes:
        return encode(
            CommandMessage(id=cmd.id, name=cmd.name, args=cmd.args, ts=cmd.created_at, expires_at=cmd.expires_at)
        )

    def changed(self, cmd: Command) -> None:
        """Announce a status change: a live event, and the listeners (the rollout engine)."""
        self._bus.publish("command", command_public(cmd), cmd.device_id)
        for listener in self.listeners:
            try:
                listener(cmd)
            except Exception:
                log.exception("command listener failed")

    async def create(
        self,
        device_id: str,
        name: str,
        args: dict[str, Any],
        *,
        ttl_s: int | None = None,
        timeout_s: int | None = None,
        created_by: str = "",
        rollout_id: str | None = None,
    ) -> Command:
        cmd = build(
            device_id, name, args, ttl_s=ttl_s, timeout_s=timeout_s, created_by=created_by, rollout_id=rollout_id
        )
        if self._loop_db is not None:
            stored = await store_for_unit_on_loop(self._loop_db, cmd)
        else:
            stored = await asyncio.to_thread(self._store_new, cmd)
        if not stored:  # the unit's existence is checked by the same write
            raise NotFound(f"no unit with id {cmd.device_id!r}")
        self.changed(cmd)
        await self.send(cmd)
        return cmd

    def _store_new(self, cmd: Command) -> bool:
        """Store the command and its first event; False (nothing stored) when its unit does not exist."""
        return once_more_on_disconnect(lambda: store_for_unit(self._engine, cmd))

    async def send(self, cmd: Command) -> None:
        """Publish a stored command and mark it `sent`; without a broker it stays `queued` (sent again later)."""
        try:
            await self._link.publish(topic(cmd.device_id, Kind.CMD), self._message(cmd), qos=1)
        except BrokerUnavailable as exc:
            log.info("command %s stays queued: %s", cmd.id, exc)
            return
        now = now_ms()
        if self._loop_db is not None:
            marked = await mark_sent_on_loop(self._loop_db, cmd.id, now)
        else:
            marked = await asyncio.to_thread(self._mark_sent, cmd.id, now)
        if marked:
            cmd.status, cmd.updated_at = "sent", now
            self.changed(cmd)

    async def send_many(self, commands: Iterable[Command]) -> None:
        limit = asyncio.Semaphore(SEND_CONCURRENCY)

        async def one(cmd: Command) -> None:
            async with limit:
                await self.send(cmd) if cmd.status == "queued" else await self._resend(cmd)

        await asyncio.gather(*(one(c) for c in commands))

    def _mark_sent(self, command_id: str, now: int) -> bool:
        return once_more_on_disconnect(lambda: mark_sent(self._engine, command_id, now))

    def _load_pending(self, device_id: str, now: int) -> list[Command]:
        with Session(self._engine, expire_on_commit=False) as s:
            q = (
                select(Command)
                .where(Command.device_id == device_id, col(Command.status).in_(PENDING), Command.expires_at > now)
                .order_by(col(Command.created_at))
            )
            return list(s.exec(q).all())

    async def republish_pending(self, device_id: str) -> int:
        """Send again every unexpired command the unit has not taken (it dedupes by id)."""
        pending = await asyncio.to_thread(self._load_pending, device_id, now_ms())
        for cmd in pending:  # in creation order: the unit runs them in the order they were given
            await self.send(cmd) if cmd.status == "queued" else await self._resend(cmd)
        return len(pending)

    def republish_pending_soon(self, device_id: str) -> None:
        """Re-publish in the background: ingest must not wait for the broker's acknowledgements."""
        task = asyncio.create_task(self.republish_pending(device_id), name=f"republish-{device_id}")
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _resend(self, cmd: Command) -> None:
        try:
            await self._link.publish(topic(cmd.device_id, Kind.CMD), self._message(cmd), qos=1)
        except BrokerUnavailable:
            return

    async def send_stale_queued(self, older_than_ms: int = RESEND_AFTER_MS) -> int:
        """Publish commands that stayed `queued`: stored while the broker was away, or by a replica that stopped
        between storing and publishing. Called when the broker link (re)connects and by the sweeper."""
        if not self._link.connected.is_set():
            return 0
        now = now_ms()

        def load() -> list[Command]:
            with Session(self._engine, expire_on_commit=False) as s:
                q = select(Command).where(
                    Command.status == "queued", Command.expires_at > now, Command.created_at <= now - older_than_ms
                )
                return list(s.exec(q.order_by(col(Command.created_at)).limit(5000)).all())

        stale = await asyncio.to_thread(load)
        await self.send_many(stale)
        return len(stale)

    async def cancel(self, command_id: str) -> Command:
        def do() -> Command:
            with Session(self._engine, expire_on_commit=False) as s:
                cmd = s.get(Command, command_id)
                if cmd is None:
                    raise NotFound(f"no command with id {command_id!r}")
                if cmd.status not in PENDING or not transition(s, cmd, "canceled", now_ms()):
                    raise Conflict(f"command is {cmd.status}; only queued or sent commands can be canceled")
                s.commit()
                return cmd

        cmd = await asyncio.to_thread(do)
        self.changed(cmd)
        return cmd

    def sweep(self) -> list[Command]:
        """Expire untaken commands past their TTL; time out taken ones past their timeout."""
        now = now_ms()
        changed: list[Command] = []
        with Session(self._engine, expire_on_commit=False) as s:
            expired = select(Command).where(col(Command.status).in_(PENDING), Command.expires_at <= now)
            for cmd in list(s.exec(expired.order_by(Command.id))):
                if transition(s, cmd, "expired", now):
                    cmd.output = cmd.output or "not taken by the unit before it expired"
                    s.add(cmd)
                    changed.append(cmd)
            taken = select(Command).where(col(Command.status).in_(TAKEN))
            for cmd in list(s.exec(taken.order_by(Command.id))):
                started = cmd.started_at or cmd.updated_at
                if started + cmd.timeout_s * 1000 <= now and transition(s, cmd, "timed_out", now):
                    cmd.output = cmd.output or f"no result within {cmd.timeout_s} s"
                    s.add(cmd)
                    changed.append(cmd)
            s.commit()
        return changed

    async def run_sweeper(self, interval_s: float = 1.0) -> None:
        while True:
            try:
                for cmd in await asyncio.to_thread(self.sweep):
                    self.changed(cmd)
                await self.send_stale_queued()
            except Exception:
                log.exception("command sweep failed")
            await asyncio.sleep(interval_s)


__all__ = ["CommandError", "Dispatcher", "FINAL", "build", "check_limits", "store_new", "validate"]
