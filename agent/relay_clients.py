"""The relay bridge's local clients, on the `websockets` threading server (loaded on the first connection).

Before the handshake every request must name a loopback Host (no DNS rebinding) and, when a browser sends
an Origin, a loopback or configured origin. `GET /turn-credentials` is answered there without a WebSocket.
Each client then has the websockets handler thread (reads, publishes to `relay/up`) and a writer thread
(drains its queue of `relay/down` messages).

Close codes: 1009 message over MAX_RELAY_BYTES, 1013 too many local clients, 4429 over the message rate,
4503 the agent is not connected to the fleet broker, 1001 the agent is stopping.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from agent.turn_fetch import TurnUnavailable
from protocol.payloads import MAX_RELAY_BYTES

if TYPE_CHECKING:
    from agent.turn_fetch import TurnFetcher


class RelayBridge(Protocol):
    """What the client side uses of agent.relay_bridge.RelayBridge (named here, so neither imports the other)."""

    turn: TurnFetcher | None
    origins: set[str]
    max_clients: int
    clients: set[LocalClient]
    lock: threading.Lock
    stopping: threading.Event
    publish_up: Callable[[bytes], bool]

    @property
    def client_count(self) -> int: ...


log = logging.getLogger(__name__)

__all__ = ["CLOSE_BROKER_DOWN", "CLOSE_RATE_LIMITED", "LocalClient", "connection_handler"]

CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013
CLOSE_RATE_LIMITED = 4429
CLOSE_BROKER_DOWN = 4503

OUT_QUEUE = 256  # messages waiting for one slow local client before they are dropped
RATE_PER_S = 20.0  # a local client's messages to relay/up, as the service allows a controller
BURST = 40.0
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
_REASONS = {200: "OK", 403: "Forbidden", 404: "Not Found", 503: "Service Unavailable"}


class LocalClient:
    """One local connection: what is waiting to be sent to it, and its token bucket for relay/up."""

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.outgoing: queue.Queue[str | bytes | None] = queue.Queue(OUT_QUEUE)
        self.closed = threading.Event()
        self._tokens = BURST
        self._stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(BURST, self._tokens + (now - self._stamp) * RATE_PER_S)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def close_going_away(self) -> None:
        self.conn.close(CLOSE_GOING_AWAY, "the agent is stopping")


def connection_handler(bridge: RelayBridge, listener: socket.socket) -> Callable[[socket.socket, Any], None]:
    """What handles one accepted socket: the websockets server's handshake, then `_serve`."""
    ws_log = logging.getLogger(f"{__name__}.ws")
    if ws_log.level == logging.NOTSET:
        ws_log.setLevel(logging.WARNING)  # not a line per connection opened or request answered
        ws_log.addFilter(_QuietHandshakes())
    server = serve(
        lambda conn: _serve(bridge, conn),
        sock=listener,
        process_request=lambda _conn, request: _check(bridge, request),
        max_size=MAX_RELAY_BYTES,
        compression=None,
        ping_interval=None,
        open_timeout=5,
        close_timeout=2,
        server_header=None,
        logger=ws_log,
    )
    return server.handler


def _check(bridge: RelayBridge, request: Request) -> Response | None:
    """Before the WebSocket handshake: loopback Host, allowed Origin, the TURN endpoint, client limit."""
    host = urlsplit("//" + request.headers.get("Host", "")).hostname or ""
    if host not in _LOOPBACK_NAMES:
        return _json(403, {"detail": "the relay bridge answers only to 127.0.0.1 or localhost"})
    origin = request.headers.get("Origin")
    if origin is not None and not (
        urlsplit(origin).hostname in _LOOPBACK_NAMES or origin.rstrip("/") in bridge.origins
    ):
        return _json(403, {"detail": f"origin {origin[:100]!r} is not allowed (see relay_origin)"})
    path = urlsplit(request.path).path
    if path == "/turn-credentials":
        return _turn_answer(bridge, origin)
    if path != "/":
        return _json(404, {"detail": "not found; the relay is at / and TURN credentials at /turn-credentials"})
    if bridge.client_count >= bridge.max_clients:
        return _json(503, {"detail": f"too many local relay clients (at most {bridge.max_clients})"})
    return None


def _turn_answer(bridge: RelayBridge, origin: str | None) -> Response:
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}
    if bridge.turn is None:
        return _json(503, {"detail": "TURN credentials are not configured on this agent (set api_url)"}, headers)
    try:
        return _json(200, bridge.turn.get(), headers)
    except TurnUnavailable as exc:
        return _json(503, {"detail": str(exc)}, headers)


def _serve(bridge: RelayBridge, conn: ServerConnection) -> None:
    """One local client, on its websockets handler thread: what it sends goes to relay/up."""
    try:
        peer = conn.remote_address[1]
    except OSError:  # gone between the handshake and here: nothing to serve, no slot to take
        return
    client = LocalClient(conn)
    with bridge.lock:
        if len(bridge.clients) >= bridge.max_clients:
            conn.close(CLOSE_TRY_AGAIN, "too many local relay clients")
            return
        bridge.clients.add(client)
    log.info("relay client connected from port %s", peer)
    try:
        threading.Thread(target=_write, args=(client,), name="agent-relay-out", daemon=True).start()
        for message in conn:
            if bridge.stopping.is_set():
                break
            if not client.allow():
                conn.close(CLOSE_RATE_LIMITED, "too many messages; slow down")
                break
            data = message.encode() if isinstance(message, str) else message
            if not bridge.publish_up(data):
                conn.close(CLOSE_BROKER_DOWN, "the agent is not connected to the fleet broker")
                break
    except ConnectionClosed:
        pass
    finally:
        with bridge.lock:
            bridge.clients.discard(client)
        client.closed.set()
        try:
            client.outgoing.put_nowait(None)
        except queue.Full:
            pass  # the writer fails its next send on the closed connection and ends
        log.info("relay client from port %s disconnected", peer)


def _write(client: LocalClient) -> None:
    while True:
        message = client.outgoing.get()
        if message is None or client.closed.is_set():
            return
        try:
            client.conn.send(message)
        except ConnectionClosed:
            return


class _QuietHandshakes(logging.Filter):
    """A port probe or a client that is not HTTP is worth a debug line, not an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "opening handshake failed":
            log.debug("local connection closed before a valid request: %s", record.exc_info and record.exc_info[1])
            return False
        return True


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(body).encode()
    all_headers = Headers(
        {
            "Content-Type": "application/json",
            "Content-Length": str(len(data)),
            "Cache-Control": "no-store",
            "Connection": "close",
            **(headers or {}),
        }
    )
    return Response(status, _REASONS.get(status, ""), all_headers, data)
