"""`WS /api/devices/{id}/forward/{port}`: a raw byte stream to 127.0.0.1:port on a unit (`fleet forward` uses it).

Binary messages each way carry the TCP stream's bytes; text messages are refused. When the unit's server closes
the connection, what it sent is delivered and the socket is closed with 1000; when the client closes the socket,
what it sent is written to the server first, then the unit closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from fleet_service.api.deps import authenticate, source_ip
from fleet_service.auth.web_sessions import same_origin
from fleet_service.refusals import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_LIMIT,
    CLOSE_NORMAL,
    CLOSE_UNAUTHENTICATED,
    CODE_OF,
    Refused,
    refused,
)
from fleet_service.terminal.audited_session import Caller
from fleet_service.terminal.forward_access import check_role, check_unit, parse_port
from fleet_service.terminal.tcp_stream import TcpStream
from protocol.terminal import Close, CloseReason

router = APIRouter(tags=["terminal"])
log = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE = 1024 * 1024


@router.websocket("/api/devices/{device_id}/forward/{port}")
async def forward(ws: WebSocket, device_id: str, port: str) -> None:
    ctx = ws.app.state.ctx
    await ws.accept()
    identity = await authenticate(ws, ctx)
    if identity is None:
        await ws.close(CLOSE_UNAUTHENTICATED, "missing or invalid credentials")
        return
    limit = ws.app.state.forward_streams
    try:
        check_role(identity)
        if "authorization" not in ws.headers and not same_origin(ws):
            raise refused(CLOSE_FORBIDDEN, "cross-origin port forward connection refused")
        number = parse_port(port)
        await asyncio.to_thread(check_unit, ctx.engine, identity, device_id, number)
        if not limit.acquire(identity.label):
            raise refused(CLOSE_LIMIT, f"at most {limit.limit} forwarded connections at a time per credential")
    except Refused as refusal:
        await ws.close(refusal.code, _short(str(refusal)))
        return
    s = ctx.settings
    caller = Caller(device_id, identity.label, identity.role, source_ip(ws), s.replica_id)
    try:
        try:
            stream = await TcpStream.open(
                ctx.terminals, ctx.engine, caller, number, "forward", s.terminal_open_timeout_s
            )
        except Refused as refusal:
            await ws.close(refusal.code, _short(str(refusal)))
            return
        code, reason = await _bridge(ws, stream)
        with contextlib.suppress(Exception):  # the client may be gone already
            await ws.close(code, _short(reason))
    finally:
        limit.release(identity.label)


async def _bridge(ws: WebSocket, stream: TcpStream) -> tuple[int, str]:
    """Pump both ways until one side ends; how to close the client's socket."""
    down = asyncio.create_task(_to_client(ws, stream))
    up = asyncio.create_task(_to_unit(ws, stream))
    try:
        done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        if up in done and not down.done():
            problem = up.result()
            final = await stream.close(problem)
            if problem is not None:
                return CLOSE_BAD_REQUEST, problem.message
            return CLOSE_NORMAL, final.message or "closed"
        final = await stream.close(None if down.result() else _lost())
        if final.reason is CloseReason.EXITED:
            return CLOSE_NORMAL, final.message
        return CODE_OF.get(final.reason, CLOSE_NORMAL), final.message or final.reason.name
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)


def _lost() -> Close:
    return Close(CloseReason.OPERATOR, None, "the client's connection was lost")


async def _to_client(ws: WebSocket, stream: TcpStream) -> bool:
    """The server's bytes to the client until the stream ends (True), or the client's socket fails (False)."""
    try:
        while data := await stream.read():
            await ws.send_bytes(data)
        return True
    except (WebSocketDisconnect, OSError, RuntimeError):
        return False


async def _to_unit(ws: WebSocket, stream: TcpStream) -> Close | None:
    """The client's bytes to the server; None when the client closed, a Close for a message we refuse."""
    while True:
        message = await ws.receive()
        if message.get("type") == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if data is None:
            return Close(CloseReason.ERROR, None, "a port forward carries binary messages only")
        if len(data) > MAX_CLIENT_MESSAGE:
            return Close(CloseReason.ERROR, None, f"a message may carry at most {MAX_CLIENT_MESSAGE} bytes")
        if data:
            await stream.write(data)  # after the stream ended: dropped, and the other pump ends the bridge


def _short(text: str) -> str:
    """A WebSocket close reason holds at most 123 bytes."""
    return text.encode("utf-8")[:120].decode("utf-8", "ignore")
