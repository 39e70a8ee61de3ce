"""A TCP connection to 127.0.0.1:PORT on a unit, carried by one remote session, as an async byte stream.

The port forward's WebSocket and the HTTP proxy both use it. Each stream has an audit row in `terminal_session`
(kind `forward` or `proxy`, the port, the bytes each way, how it ended); its contents are never recorded.
Reading grants the unit more credit as the caller takes data, so at most one window of a stream is in flight.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.engine import Engine

from fleet_service.refusals import CLOSE_REFUSED, CODE_OF, refused
from fleet_service.terminal.audit import start_row, update_row
from fleet_service.terminal.audited_session import Caller, audit_row, close_and_release, end_audit, open_on_unit
from fleet_service.terminal.hub import TerminalHub
from fleet_service.terminal.session import ServiceSession
from protocol.terminal import Close, CloseReason, Open, SessionKind

log = logging.getLogger(__name__)


class TcpStream:
    def __init__(self, hub: TerminalHub, engine: Engine, session: ServiceSession, port: int) -> None:
        self.hub = hub
        self.engine = engine
        self.session = session
        self.port = port
        self.sid = session.sid
        self.eof = False
        self._released = False

    @classmethod
    async def open(
        cls, hub: TerminalHub, engine: Engine, caller: Caller, port: int, kind: str, timeout: float
    ) -> TcpStream:
        """Ask the unit to connect to its 127.0.0.1:port; Refused (with the row written) when it does not."""
        request = Open(SessionKind.TCP, 1, 1, hub.window, caller.actor, str(port), "tcp")
        session = await open_on_unit(hub, caller, request)
        row = audit_row(session, caller, kind=kind, port=port, cols=0, rows=0)
        stream = cls(hub, engine, session, port)
        try:
            await asyncio.to_thread(start_row, engine, row)
            answer = await session.answer(timeout)
        except BaseException:
            await stream.close(Close(CloseReason.SERVICE_STOPPING, None, "the fleet service is stopping"))
            raise
        if isinstance(answer, Close):
            await stream.close(answer)
            raise refused(CODE_OF.get(answer.reason, CLOSE_REFUSED), answer.message or answer.reason.name)
        await asyncio.to_thread(update_row, engine, session.sid, remote_user=answer.user[:200])
        return stream

    @property
    def ended(self) -> Close | None:
        return self.session.ended

    async def read(self) -> bytes:
        """The next bytes from the unit's server; b"" once the stream ended (`ended` says how)."""
        if self.eof:
            return b""
        item = await self.session.output.get()
        if isinstance(item, Close):
            self.eof = True
            return b""
        await self.session.delivered(len(item))
        return item

    async def write(self, data: bytes) -> None:
        """Send bytes to the unit's server as its credit allows (waits for it); nothing once the stream ended."""
        await self.session.write_input(data)

    async def checkpoint(self) -> None:
        """Write the bytes so far to the audit row (a stream kept open for reuse shows what it carried)."""
        session = self.session
        try:
            await asyncio.to_thread(
                update_row, self.engine, session.sid, bytes_in=session.bytes_in, bytes_out=session.consumed
            )
        except Exception:
            log.exception("updating the audit row of port forward %s failed", session.sid[:8])

    async def close(self, close: Close | None = None) -> Close:
        """End the stream (the unit is told unless it ended it), write the audit row; the stream's end."""
        if self._released:
            assert self.session.ended is not None
            return self.session.ended
        self._released = True
        session = self.session
        final = await close_and_release(self.hub, session, close)
        await end_audit(self.engine, session, final, "port forward", f"to {session.device_id}:{self.port}")
        return final
