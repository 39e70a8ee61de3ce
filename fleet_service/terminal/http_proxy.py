"""HTTP/1.1 to a unit's loopback port over TCP streams: the request rewritten, the response streamed back.

Toward the unit: `Host: 127.0.0.1:PORT`; the fleet's own credentials (Authorization, the dashboard's cookies, the
CSRF header) and hop-by-hop headers removed; `X-Forwarded-For`, `-Host`, `-Proto` and `-Prefix` added. h11 frames
both messages (Content-Length, chunked, or a response that ends when the unit's server closes). A stream whose
exchange ended cleanly goes back to a small per-caller, per-unit, per-port pool for the next request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import h11

from fleet_service.auth.web_sessions import COOKIE_NAME, CSRF_HEADER
from fleet_service.terminal.tcp_stream import TcpStream
from fleet_service.terminal.unit_ui_grants import COOKIE_NAME as UI_COOKIE
from fleet_service.terminal.unit_ui_grants import SECURE_COOKIE_NAME as SECURE_UI_COOKIE

POOL_SIZE = 4  # idle streams kept per (caller, unit, port)
POOL_IDLE_S = 30.0  # an idle stream older than this is closed instead of reused
MAX_HEAD = 64 * 1024

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
_FLEET_ONLY = {"authorization", "cookie", CSRF_HEADER, "host", "content-length", "forwarded"}
_FLEET_COOKIES = {COOKIE_NAME, UI_COOKIE, SECURE_UI_COOKIE}


PoolKey = tuple[str, str, int]  # the caller's label, the unit, the port


class UpstreamBroken(Exception):
    """The unit's server closed or broke the exchange; `started` says whether response bytes had arrived."""

    def __init__(self, message: str, started: bool) -> None:
        super().__init__(message)
        self.started = started


@dataclass(frozen=True)
class Forwarded:
    client_ip: str
    host: str
    proto: str
    prefix: str


def request_headers(
    headers: Iterable[tuple[str, str]], port: int, fwd: Forwarded, body_length: int | None, chunked: bool
) -> list[tuple[str, str]]:
    """The headers the unit sees: none of the fleet's credentials, its own Host, X-Forwarded-*, the body's framing."""
    out: list[tuple[str, str]] = [("host", f"127.0.0.1:{port}")]
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in _FLEET_ONLY or lower.startswith("x-forwarded-"):
            if lower == "cookie" and (kept := strip_fleet_cookies(value)):
                out.append(("cookie", kept))
            continue
        out.append((lower, value))
    out += [("x-forwarded-for", fwd.client_ip), ("x-forwarded-host", fwd.host), ("x-forwarded-proto", fwd.proto)]
    if fwd.prefix:  # on a unit origin the unit's pages are at its root
        out.append(("x-forwarded-prefix", fwd.prefix))
    if body_length is not None:
        out.append(("content-length", str(body_length)))
    elif chunked:
        out.append(("transfer-encoding", "chunked"))
    return out


def strip_fleet_cookies(header: str) -> str:
    """A Cookie header without the fleet's own cookies (the unit's own cookies stay)."""
    kept = []
    for part in header.split(";"):
        name = part.split("=", 1)[0].strip()
        if name and name not in _FLEET_COOKIES:
            kept.append(part.strip())
    return "; ".join(kept)


def response_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The unit's response headers for the browser: no hop-by-hop ones, no cookie that would replace the fleet's,
    and its cookies kept to the host that served them."""
    out = []
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in HOP_BY_HOP:
            continue
        if name == "set-cookie":
            if value.split("=", 1)[0].strip() in _FLEET_COOKIES:
                continue
            value = host_only(value)
        out.append((name, value))
    return out


def host_only(set_cookie: str) -> str:
    """A Set-Cookie value without its Domain attribute: a unit's cookie for the parent domain would reach every
    other unit's origin (and could shadow the cookies that admit a browser there)."""
    parts = [p.strip() for p in set_cookie.split(";")]
    return "; ".join([parts[0], *(p for p in parts[1:] if p.split("=", 1)[0].strip().lower() != "domain")])


@dataclass
class Exchange:
    """One stream and its h11 state: a request written, its response read."""

    stream: TcpStream
    conn: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD))
    idle_since: float = 0.0
    reused: bool = False

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.write(data)

    async def next_event(self) -> h11.Event:
        started = self.conn.their_state is not h11.SEND_RESPONSE
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamBroken(f"the unit's server sent a malformed response: {exc}", True) from None
            if event is h11.PAUSED:
                raise UpstreamBroken("the unit's server sent more than one response", True)
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            data = await self.stream.read()
            if not data and self.stream.ended is not None and self.conn.their_state is h11.SEND_RESPONSE:
                why = self.stream.ended.message or "the connection closed"
                raise UpstreamBroken(f"the unit's server closed the connection before answering ({why})", started)
            started = started or bool(data)
            self.conn.receive_data(data)

    async def response(self) -> h11.Response:
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise UpstreamBroken(f"unexpected {type(event).__name__} before the response", True)

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise UpstreamBroken("the unit's server closed the connection in the middle of the body", True)

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE and self.stream.ended is None


class Pool:
    """Idle streams to reuse, per (caller, unit, port): the audit row of a stream names the caller who opened it."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[Exchange]] = {}
        self._closing: set[asyncio.Task[object]] = set()

    def take(self, key: PoolKey) -> Exchange | None:
        idle = self._idle.get(key, [])
        now = time.monotonic()
        while idle:
            exchange = idle.pop()
            if exchange.stream.ended is None and now - exchange.idle_since < POOL_IDLE_S:
                exchange.reused = True
                return exchange
            self.discard(exchange)
        self._idle.pop(key, None)
        return None

    def give_back(self, key: PoolKey, exchange: Exchange) -> None:
        if not exchange.reusable:
            self.discard(exchange)
            return
        exchange.conn.start_next_cycle()
        exchange.idle_since = time.monotonic()
        idle = self._idle.setdefault(key, [])
        idle.append(exchange)
        while len(idle) > POOL_SIZE:
            self.discard(idle.pop(0))

    def discard(self, exchange: Exchange) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(exchange.stream.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def sweep(self) -> None:
        """Close idle streams past POOL_IDLE_S (called now and then)."""
        now = time.monotonic()
        for key in list(self._idle):
            fresh = []
            for exchange in self._idle[key]:
                if exchange.stream.ended is None and now - exchange.idle_since < POOL_IDLE_S:
                    fresh.append(exchange)
                else:
                    self.discard(exchange)
            if fresh:
                self._idle[key] = fresh
            else:
                del self._idle[key]

    def close_all(self) -> None:
        for idle in self._idle.values():
            for exchange in idle:
                self.discard(exchange)
        self._idle.clear()
