"""A request or a WebSocket passed on to a unit's loopback port and its answer streamed back: what the fleet path
`/api/devices/{id}/proxy/{port}/...` (for scripts) and a unit port's own origin (for browsers) both do.

Each request goes to 127.0.0.1:PORT on the unit over a TCP stream of its own, or one reused from the caller's
small pool; the response streams back as the unit sends it. The unit never sees the fleet's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import h11
from fastapi import Request, WebSocket
from fastapi.responses import Response, StreamingResponse
from starlette.requests import HTTPConnection

from fleet_service.api.connections import PerIdentityLimit
from fleet_service.api.deps import source_ip
from fleet_service.auth.credentials import Identity
from fleet_service.errors import Invalid, TooManyRequests, UpstreamFailed
from fleet_service.refusals import CLOSE_CONNECT_FAILED, CLOSE_LIMIT, Refused
from fleet_service.terminal.audited_session import Caller
from fleet_service.terminal.forward_access import check_role, check_unit
from fleet_service.terminal.http_proxy import (
    Exchange,
    Forwarded,
    Pool,
    PoolKey,
    UpstreamBroken,
    request_headers,
    response_headers,
)
from fleet_service.terminal.tcp_stream import TcpStream
from fleet_service.terminal.ws_proxy import UnitWebSocket

__all__ = ["admit", "refuse", "serve_http", "serve_websocket"]


async def admit(conn: HTTPConnection, identity: Identity, device_id: str, port: int) -> None:
    """Refused unless `identity` may reach `port` on the unit now (role, the unit's config, online)."""
    conn.state.identity = identity  # the audit log names who
    check_role(identity)
    await asyncio.to_thread(check_unit, conn.app.state.ctx.engine, identity, device_id, port)


def _forwarded(conn: Request | WebSocket, prefix: str) -> Forwarded:
    proto = "https" if conn.url.scheme in ("https", "wss") else "http"
    return Forwarded(source_ip(conn), conn.headers.get("host", ""), proto, prefix)


async def _open(conn: Request | WebSocket, identity: Identity, device_id: str, port: int) -> TcpStream:
    ctx = conn.app.state.ctx
    caller = Caller(device_id, identity.label, identity.role, source_ip(conn), ctx.settings.replica_id)
    return await TcpStream.open(ctx.terminals, ctx.engine, caller, port, "proxy", ctx.settings.terminal_open_timeout_s)


def _target(conn: Request | WebSocket, path: str) -> str:
    return "/" + path.lstrip("/") + (f"?{conn.url.query}" if conn.url.query else "")


async def serve_http(
    request: Request,
    identity: Identity,
    device_id: str,
    port: int,
    path: str,
    prefix: str,
    extra_headers: list[tuple[str, str]] | None = None,
) -> Response:
    """The unit's answer to this request for `path`, streamed; `extra_headers` are added to it."""
    limit: PerIdentityLimit = request.app.state.forward_streams
    pool: Pool = request.app.state.proxy_pool
    if not limit.acquire(identity.label):
        raise TooManyRequests(f"at most {limit.limit} forwarded connections at a time per credential", 1)
    released = False
    try:
        length = request.headers.get("content-length")
        chunked = "transfer-encoding" in request.headers
        body_length = int(length) if length and length.isdigit() else None
        headers = request_headers(request.headers.items(), port, _forwarded(request, prefix), body_length, chunked)
        h11_request = _h11_request(request.method, _target(request, path), headers)
        key = (identity.label, device_id, port)
        has_body = body_length is not None or chunked
        pool.sweep()
        exchange, response = await _exchange(request, identity, pool, key, h11_request, has_body)
        released = True
        answer = StreamingResponse(_body(exchange, pool, key, limit, identity.label), status_code=response.status_code)
        answer.raw_headers = [  # as the unit sent them, repeated ones (Set-Cookie) included
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in [*response_headers(response.headers), *(extra_headers or [])]
        ]
        return answer
    except UpstreamBroken as broken:
        raise UpstreamFailed(str(broken)) from None
    finally:
        if not released:
            limit.release(identity.label)


def _h11_request(method: str, target: str, headers: list[tuple[str, str]]) -> h11.Request:
    try:
        return h11.Request(method=method, target=target.encode("latin-1"), headers=headers)
    except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
        raise Invalid(f"the request cannot be passed on to the unit: {exc}") from None


async def _exchange(
    request: Request, identity: Identity, pool: Pool, key: PoolKey, h11_request: h11.Request, has_body: bool
) -> tuple[Exchange, h11.Response]:
    """Write the request on a pooled stream (no body: a stale one is retried once on a fresh stream) or a new one."""
    _, device_id, port = key
    exchange = None if has_body else pool.take(key)
    while True:
        if exchange is None:
            exchange = Exchange(await _open(request, identity, device_id, port))
        try:
            await exchange.send(h11_request)
            if has_body:
                async for chunk in request.stream():
                    if chunk:
                        await exchange.send(h11.Data(data=chunk))
            await exchange.send(h11.EndOfMessage())
            return exchange, await exchange.response()
        except UpstreamBroken as broken:
            pool.discard(exchange)
            if exchange.reused and not broken.started:
                exchange = None  # the unit's server had closed the idle connection: once more on a new one
                continue
            raise
        except BaseException:
            pool.discard(exchange)
            raise


async def _body(
    exchange: Exchange, pool: Pool, key: PoolKey, limit: PerIdentityLimit, label: str
) -> AsyncIterator[bytes]:
    complete = False
    try:
        async for chunk in exchange.body():
            yield chunk
        complete = True
    finally:
        if complete:
            await exchange.stream.checkpoint()
            pool.give_back(key, exchange)
        else:
            pool.discard(exchange)
        limit.release(label)


async def serve_websocket(ws: WebSocket, identity: Identity, device_id: str, port: int, path: str, prefix: str) -> None:
    """Bridge this (not yet accepted) WebSocket to one on the unit's port, after the unit's server accepted it."""
    limit: PerIdentityLimit = ws.app.state.forward_streams
    if not limit.acquire(identity.label):
        await ws.accept()
        await ws.close(CLOSE_LIMIT, f"at most {limit.limit} forwarded connections at a time per credential")
        return
    stream: TcpStream | None = None
    try:
        stream = await _open(ws, identity, device_id, port)
        headers = request_headers(ws.headers.items(), port, _forwarded(ws, prefix), None, False)
        offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        unit = UnitWebSocket(stream, _target(ws, path), headers[1:], offered)
        subprotocol = await unit.handshake()
        await ws.accept(subprotocol=subprotocol)
        code, reason = await unit.bridge(ws)
        with contextlib.suppress(Exception):
            await ws.close(code if 1000 <= code < 5000 and code not in (1005, 1006) else 1000, reason[:120])
    except Refused as refusal:
        await refuse(ws, refusal)
    except UpstreamBroken as broken:
        await ws.accept()
        await ws.close(CLOSE_CONNECT_FAILED, str(broken)[:120])
    finally:
        if stream is not None:
            await stream.close()
        limit.release(identity.label)


async def refuse(ws: WebSocket, refusal: Refused) -> None:
    """A WebSocket refused before it started: accepted, then closed with the refusal's code and reason."""
    await ws.accept()
    await ws.close(refusal.code, str(refusal)[:120])
