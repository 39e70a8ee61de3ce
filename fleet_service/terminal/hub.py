"""The remote sessions held on this replica, and the routing of their frames.

The replica that holds an operator's WebSocket subscribes to that session's `up` topic alone, without `$share`
(a shared subscription would deal the frames to any replica), and unsubscribes when the session ends: a unit's
output reaches exactly the replica that needs it, whichever replica that is. Frames for a session this replica
does not hold (one that ended, or one a restarted replica's persistent session still subscribes to) are dropped
and the stale subscription removed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fleet_service.broker_link.base import BrokerLink
from fleet_service.live.bus import EventBus
from fleet_service.prometheus import Registry
from fleet_service.terminal.session import ServiceSession
from protocol import ProtocolError
from protocol.ids import new_id
from protocol.terminal import KEEPALIVE_S, PEER_TIMEOUT_S, Close, CloseReason, Credit, Open, decode_frame
from protocol.topics import TERM_DOWN, TERM_UP, parse_term, term_topic

log = logging.getLogger(__name__)

_TICK_S = 1.0


class TerminalHub:
    def __init__(self, link: BrokerLink, bus: EventBus, registry: Registry, window: int) -> None:
        self._link = link
        self._bus = bus
        self._registry = registry
        self.window = window
        self.sessions: dict[str, ServiceSession] = {}
        self._stale: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        registry.gauge_callback("fleet_terminal_sessions", lambda: len(self.sessions))
        registry.describe("fleet_terminal_frames_total", "counter", "Remote session frames, by direction")
        registry.describe("fleet_terminal_dropped_total", "counter", "Remote session frames dropped, by reason")

    async def open(self, device_id: str, request: Open) -> ServiceSession:
        """Start a session: subscribe to its uplink, then send OPEN. BrokerUnavailable when the broker is away."""
        sid = new_id()
        down = term_topic(device_id, sid, TERM_DOWN)
        up = term_topic(device_id, sid, TERM_UP)

        async def publish(payload: bytes) -> None:
            await self._link.publish(down, payload, qos=1)
            self._registry.inc("fleet_terminal_frames_total", direction="down")

        session = ServiceSession(sid, device_id, publish, request.window)
        self.sessions[sid] = session
        try:
            await self._link.subscribe(up)  # before OPEN: the unit's answer must find us subscribed
            await session.send(request)
        except BaseException:
            await self.release(session)
            raise
        return session

    async def release(self, session: ServiceSession) -> None:
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]
        await self._link.unsubscribe(term_topic(session.device_id, session.sid, TERM_UP))

    def up(self, name: str, payload: bytes) -> None:
        """A frame on some session's `up` topic (from the broker link, on the event loop): never blocks."""
        term = parse_term(name)
        if term is None or term.direction != TERM_UP:
            return
        session = self.sessions.get(term.session)
        if session is None or session.device_id != term.device_id:
            self._registry.inc("fleet_terminal_dropped_total", reason="no_session")
            self._drop_stale(name)
            return
        self._registry.inc("fleet_terminal_frames_total", direction="up")
        try:
            frame = decode_frame(payload)
        except ProtocolError as exc:
            session.end(Close(CloseReason.ERROR, None, f"bad frame from the unit: {exc}"), tell_unit=True)
            return
        session.on_frame(frame)

    def _drop_stale(self, name: str) -> None:
        if name in self._stale or len(self._stale) > 1000:
            return
        self._stale.add(name)

        async def drop() -> None:
            try:
                await self._link.unsubscribe(name)
            finally:
                self._stale.discard(name)

        task = asyncio.get_running_loop().create_task(drop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def unit_offline(self, device_id: str) -> None:
        for session in list(self.sessions.values()):
            if session.device_id == device_id:
                session.end(Close(CloseReason.UNIT_OFFLINE, None, f"unit {device_id} went offline"), tell_unit=False)

    async def run(self) -> None:
        """Keepalives for quiet sessions, and the end of those whose unit stopped answering."""
        while True:
            await asyncio.sleep(_TICK_S)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.ended is not None or not session.accepted.done():
                    continue
                if now - session.last_heard >= PEER_TIMEOUT_S:
                    session.end(Close(CloseReason.TIMEOUT, None, "the unit stopped answering"), tell_unit=True)
                elif now - session.last_sent >= KEEPALIVE_S:
                    try:
                        await session.send(Credit(session.granted))
                    except Exception as exc:  # noqa: BLE001 - the broker is away; the next tick tries again
                        log.debug("keepalive of session %s failed: %s", session.sid[:8], exc)

    async def follow_presence(self) -> None:
        """End the sessions of a unit that went offline (the event reaches every replica)."""
        while True:
            async for event in self._bus.subscribe():
                if event.type == "presence" and event.device_id and event.data.get("online") is False:
                    self.unit_offline(event.device_id)
            await asyncio.sleep(0.1)  # dropped as a slow subscriber: follow again

    def stop(self) -> None:
        for session in list(self.sessions.values()):
            session.end(Close(CloseReason.SERVICE_STOPPING, None, "the fleet service is stopping"), tell_unit=True)
