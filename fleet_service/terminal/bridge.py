"""An operator's WebSocket bridged to one remote session on a unit, with its audit row and recording.

The operator's socket (defined in docs/remote-access.md):
  in   binary messages: keystrokes (bytes for the terminal); text messages: JSON
       `{"type": "resize", "cols": C, "rows": R}` or `{"type": "input", "data": "text"}`
  out  text `{"type": "opened", "session", "unit", "user"}` once the unit started the shell; binary messages: the
       terminal's output; text `{"type": "exit", "status", "reason", "message"}` at the end, then the close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from starlette.websockets import WebSocketDisconnect

from fleet_service.refusals import CLOSE_BAD_REQUEST, CLOSE_NORMAL, CLOSE_REFUSED, CODE_OF, Refused
from fleet_service.terminal.audit import start_row, update_row
from fleet_service.terminal.audited_session import Caller, audit_row, close_and_release, end_audit, open_on_unit
from fleet_service.terminal.hub import TerminalHub
from fleet_service.terminal.recording import FLUSH_S, Recorder, store_chunk
from fleet_service.terminal.session import ServiceSession
from protocol.terminal import MAX_SIZE, Close, CloseReason, Open, Resize, SessionKind

log = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE = 64 * 1024


class OperatorSocket(Protocol):
    """What the bridge needs of the operator's WebSocket (Starlette's has it)."""

    def receive(self) -> Awaitable[Mapping[str, Any]]: ...
    def send_bytes(self, data: bytes) -> Awaitable[None]: ...
    def send_text(self, data: str) -> Awaitable[None]: ...
    def close(self, code: int = 1000, reason: str | None = None) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Request(Caller):
    cols: int
    rows: int
    command: str | None
    term: str


@dataclass(frozen=True)
class Limits:
    open_timeout_s: float
    recording_max_bytes: int


async def run_session(ws: OperatorSocket, hub: TerminalHub, engine: Engine, request: Request, limits: Limits) -> None:
    """Open the session on the unit and bridge it until either side ends it; the socket is closed on return."""
    opening = Open(
        SessionKind.PTY, request.cols, request.rows, hub.window, request.actor, request.command or "", request.term
    )
    try:
        session = await open_on_unit(hub, request, opening)
    except Refused as refused:
        await ws.close(refused.code, str(refused))
        return
    row = audit_row(session, request, command=request.command, cols=request.cols, rows=request.rows)
    recorder: Recorder | None = None
    closing: tuple[int, str] | None = None  # how the operator's socket is closed, once the row is written
    try:
        # Inside the try: a row that cannot be written ends the session on the unit too (none runs unaudited).
        await asyncio.to_thread(start_row, engine, row)
        answer = await session.answer(limits.open_timeout_s)
        if isinstance(answer, Close):
            closing = (CODE_OF.get(answer.reason, CLOSE_REFUSED), answer.message or answer.reason.name)
            return
        recorder = Recorder(
            session.sid,
            request.cols,
            request.rows,
            f"{request.device_id} ({request.actor})",
            request.term,
            limits.recording_max_bytes,
        )
        await asyncio.to_thread(update_row, engine, session.sid, remote_user=answer.user)
        opened = {"type": "opened", "session": session.sid, "unit": request.device_id, "user": answer.user}
        await ws.send_text(json.dumps(opened))
        closing = await _bridge(ws, session, recorder, engine)
    finally:
        final = await close_and_release(hub, session)  # how it ended, whichever side ended it
        await _finish(engine, session, recorder, final)
        if closing is not None:
            with contextlib.suppress(Exception):  # the operator may be gone already
                await ws.close(closing[0], _short(closing[1]))


async def _bridge(
    ws: OperatorSocket, session: ServiceSession, recorder: Recorder, engine: Engine
) -> tuple[int, str] | None:
    """Run both directions until one ends (the session has ended then); how to close the operator's socket."""
    outgoing: asyncio.Task[Close | None] = asyncio.create_task(_pump_out(ws, session, recorder, engine))
    incoming = asyncio.create_task(_pump_in(ws, session, recorder))
    try:
        done, _ = await asyncio.wait({outgoing, incoming}, return_when=asyncio.FIRST_COMPLETED)
        if incoming in done and not outgoing.done():
            # The operator left (or sent something we refuse): the unit is told, what it still sends is not read.
            problem = incoming.result()
            await session.close(problem or Close(CloseReason.OPERATOR, None, "closed by the operator"))
            return (CLOSE_BAD_REQUEST, problem.message) if problem is not None else None
        final = outgoing.result()
        if final is None:  # the operator's socket failed under a send
            await session.close(Close(CloseReason.OPERATOR, None, "the operator's connection was lost"))
            return None
        code = CLOSE_NORMAL if final.reason is CloseReason.EXITED else CODE_OF.get(final.reason, CLOSE_NORMAL)
        return code, final.message or final.reason.name
    finally:
        for task in (outgoing, incoming):
            task.cancel()
        await asyncio.gather(outgoing, incoming, return_exceptions=True)


async def _pump_out(ws: OperatorSocket, session: ServiceSession, recorder: Recorder, engine: Engine) -> Close | None:
    """The unit's output to the operator, recorded; the session's end as the last message. None when the
    operator's socket cannot be written to any more."""
    try:
        return await _pump_out_until_closed(ws, session, recorder, engine)
    except (WebSocketDisconnect, OSError, RuntimeError) as exc:  # RuntimeError: a send after the close
        log.debug("terminal session %s: the operator's socket failed: %r", session.sid[:8], exc)
        return None


async def _pump_out_until_closed(
    ws: OperatorSocket, session: ServiceSession, recorder: Recorder, engine: Engine
) -> Close:
    while True:
        try:
            item = await asyncio.wait_for(session.output.get(), FLUSH_S)
        except TimeoutError:
            await _flush(engine, recorder)
            continue
        if isinstance(item, Close):
            exit_event = {"type": "exit", "status": item.status, "reason": item.reason.name.lower()}
            await ws.send_text(json.dumps({**exit_event, "message": item.message}))
            return item
        await ws.send_bytes(item)
        recorder.output(item)
        await session.delivered(len(item))
        if recorder.due():
            await _flush(engine, recorder)


async def _pump_in(ws: OperatorSocket, session: ServiceSession, recorder: Recorder) -> Close | None:
    """The operator's keystrokes and resizes to the unit; None when the operator left, a Close for a bad message."""
    while True:
        message = await ws.receive()
        if message.get("type") == "websocket.disconnect":
            return None
        data = message.get("bytes")
        text = message.get("text")
        if data is not None:
            if len(data) > MAX_CLIENT_MESSAGE:
                return Close(CloseReason.ERROR, None, f"a message may carry at most {MAX_CLIENT_MESSAGE} bytes")
            await session.write_input(data)
        elif text is not None:
            problem = await _control(session, recorder, text)
            if problem is not None:
                return Close(CloseReason.ERROR, None, problem)
        if session.ended is not None:
            return None


async def _control(session: ServiceSession, recorder: Recorder, text: str) -> str | None:
    """One JSON message from the operator; what is wrong with it, or None."""
    if len(text) > MAX_CLIENT_MESSAGE:
        return f"a message may carry at most {MAX_CLIENT_MESSAGE} bytes"
    try:
        message = json.loads(text)
    except ValueError:
        return 'text messages must be JSON: {"type": "resize", ...} or {"type": "input", ...}'
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "input" and isinstance(message.get("data"), str):
        await session.write_input(message["data"].encode("utf-8"))
        return None
    if kind == "resize":
        cols, rows = message.get("cols"), message.get("rows")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIZE for v in (cols, rows)):
            return f"resize needs integer cols and rows between 1 and {MAX_SIZE}"
        await session.send(Resize(cols, rows))
        recorder.resize(cols, rows)
        return None
    return 'unknown message: send {"type": "resize", "cols", "rows"} or {"type": "input", "data"}'


async def _flush(engine: Engine, recorder: Recorder) -> None:
    chunk = recorder.take()
    if chunk is not None:
        try:
            await asyncio.to_thread(store_chunk, engine, chunk)
        except Exception:
            log.exception("storing a piece of the recording of session %s failed", recorder.session_id[:8])


async def _finish(engine: Engine, session: ServiceSession, recorder: Recorder | None, final: Close) -> None:
    """The end of the recording, then the end of the audit row."""
    values: dict[str, Any] = {"exit_status": final.status}
    if recorder is not None:
        chunk = recorder.finish()
        if chunk is not None:
            try:
                await asyncio.to_thread(store_chunk, engine, chunk)
            except Exception:
                log.exception("storing the end of the recording of session %s failed", session.sid[:8])
        values |= {"recording_bytes": recorder.size, "recording_truncated": recorder.truncated}
    await end_audit(engine, session, final, "terminal session", f"on {session.device_id}", **values)


def _short(text: str) -> str:
    """A WebSocket close reason holds at most 123 bytes."""
    data = text.encode("utf-8")[:120]
    return data.decode("utf-8", "ignore")
