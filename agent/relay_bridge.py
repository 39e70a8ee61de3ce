"""The recorder's local signalling bridge: a WebSocket on 127.0.0.1 <-> this unit's `relay/down|up` topics.

Every message the unit receives on `relay/down` goes to every connected local client; every message a
local client sends is published to `relay/up` (QoS 1). The same port answers `GET /turn-credentials`
with the unit's cached TURN credentials (agent.turn_fetch), so the recorder never needs the fleet secret.

Threads: the MQTT network thread only drops messages into per-client queues (`on_down`); one thread
accepts connections; each client has the websockets handler thread (reads, publishes) and a writer thread
(drains its queue). The `websockets` package is imported on the first connection, so an agent whose
recorder never connects pays nothing for it.

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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.turn_fetch import TurnFetcher, TurnUnavailable
from protocol.payloads import MAX_RELAY_BYTES

if TYPE_CHECKING:
    from websockets.http11 import Request, Response
    from websockets.sync.server import ServerConnection

log = logging.getLogger(__name__)

__all__ = ["CLOSE_BROKER_DOWN", "CLOSE_RATE_LIMITED", "RelayBridge"]

CLOSE_RATE_LIMITED = 4429
CLOSE_BROKER_DOWN = 4503
CLOSE_TRY_AGAIN = 1013
CLOSE_GOING_AWAY = 1001

HOST = "127.0.0.1"
MAX_CLIENTS = 8
OUT_QUEUE = 256  # messages waiting for one slow local client before they are dropped
RATE_PER_S = 20.0  # a local client's messages to relay/up, as the service allows a controller
BURST = 40.0
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
_WARN_EVERY_S = 60.0


class _TokenBucket:
    def __init__(self, rate: float = RATE_PER_S, burst: float = BURST) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _Client:
    """One local connection: what is waiting to be sent to it, and its rate budget."""

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.outgoing: queue.Queue[str | bytes | None] = queue.Queue(OUT_QUEUE)
        self.bucket = _TokenBucket()
        self.closed = threading.Event()


class RelayBridge:
    """Local WebSocket server bridged to MQTT; `publish_up` returns False when the broker is not connected."""

    def __init__(self, port: int, publish_up: Callable[[bytes], bool], turn: TurnFetcher | None = None,
                 origins: Sequence[str] = (), max_clients: int = MAX_CLIENTS) -> None:
        self.port = port
        self.publish_up = publish_up
        self.turn = turn
        self.origins = {o.rstrip("/") for o in origins}
        self.max_clients = max_clients
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._handle: Callable[[socket.socket, Any], None] | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._warned: dict[str, float] = {}

    # Lifecycle --------------------------------------------------------------------------

    def start(self) -> bool:
        """Listen on 127.0.0.1:port; False (logged, the agent carries on) when the port cannot be had."""
        try:
            self._listener = socket.create_server((HOST, self.port), backlog=16)
        except OSError as exc:
            log.error("relay bridge disabled: cannot listen on %s:%s: %s", HOST, self.port, exc.strerror or exc)
            return False
        self._accept_thread = threading.Thread(target=self._accept_loop, name="agent-relay", daemon=True)
        self._accept_thread.start()
        log.info("relay bridge listening on ws://%s:%s/", HOST, self.port)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.conn.close(CLOSE_GOING_AWAY, "the agent is stopping")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    # MQTT side (network thread: queue only, never block) --------------------------------

    def on_down(self, payload: bytes) -> None:
        """A `relay/down` message: queue it for every local client."""
        if len(payload) > MAX_RELAY_BYTES:
            self._warn("size", "relay/down message over %d bytes dropped", MAX_RELAY_BYTES)
            return
        try:
            message: str | bytes = payload.decode("utf-8")
        except UnicodeDecodeError:
            message = payload  # opaque: passed on as a binary frame
        with self._lock:
            clients = list(self._clients)
        if not clients:
            self._warn("nobody", "relay/down message dropped: no local client is connected")
            return
        for client in clients:
            try:
                client.outgoing.put_nowait(message)
            except queue.Full:
                self._warn("slow", "a local relay client is not reading; message dropped")

    # Local side -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError as exc:
                if self._stopping.is_set():
                    return
                self._warn("accept", "relay bridge accept failed: %s", exc)
                self._stopping.wait(0.5)
                continue
            handle = self._handler()
            if handle is None:
                sock.close()
                continue
            threading.Thread(target=handle, args=(sock, addr), name="agent-relay-conn", daemon=True).start()

    def _handler(self) -> Callable[[socket.socket, Any], None] | None:
        """The websockets connection handler, built on the first connection (the import is deferred)."""
        if self._handle is None:
            try:
                from websockets.sync.server import serve
            except ImportError:
                self._warn("import", "relay bridge needs the `websockets` package (pip install websockets)")
                return None
            ws_log = logging.getLogger(f"{__name__}.ws")
            if ws_log.level == logging.NOTSET:
                ws_log.setLevel(logging.WARNING)  # not a line per connection opened or request answered
                ws_log.addFilter(_QuietHandshakes())
            server = serve(self._serve_client, sock=self._listener, process_request=self._process_request,
                           max_size=MAX_RELAY_BYTES, compression=None, ping_interval=None, open_timeout=5,
                           close_timeout=2, server_header=None, logger=ws_log)
            self._handle = server.handler
        return self._handle

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """Before the WebSocket handshake: loopback Host, allowed Origin, the TURN endpoint, client limit."""
        host = urlsplit("//" + request.headers.get("Host", "")).hostname or ""
        if host not in _LOOPBACK_NAMES:
            return _json(403, {"detail": "the relay bridge answers only to 127.0.0.1 or localhost"})
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            return _json(403, {"detail": f"origin {origin[:100]!r} is not allowed (see relay_origin)"})
        path = urlsplit(request.path).path
        if path == "/turn-credentials":
            return self._turn_answer(origin)
        if path != "/":
            return _json(404, {"detail": "not found; the relay is at / and TURN credentials at /turn-credentials"})
        if self.client_count >= self.max_clients:
            return _json(503, {"detail": f"too many local relay clients (at most {self.max_clients})"})
        return None

    def _origin_allowed(self, origin: str) -> bool:
        return urlsplit(origin).hostname in _LOOPBACK_NAMES or origin.rstrip("/") in self.origins

    def _turn_answer(self, origin: str | None) -> Response:
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}
        if self.turn is None:
            return _json(503, {"detail": "TURN credentials are not configured on this agent (set api_url)"},
                         headers)
        try:
            return _json(200, self.turn.get(), headers)
        except TurnUnavailable as exc:
            return _json(503, {"detail": str(exc)}, headers)

    def _serve_client(self, conn: ServerConnection) -> None:
        """One local client, on its websockets handler thread: what it sends goes to relay/up."""
        from websockets.exceptions import ConnectionClosed

        client = _Client(conn)
        with self._lock:
            if len(self._clients) >= self.max_clients:
                conn.close(CLOSE_TRY_AGAIN, "too many local relay clients")
                return
            self._clients.add(client)
        writer = threading.Thread(target=self._write, args=(client,), name="agent-relay-out", daemon=True)
        writer.start()
        peer = conn.remote_address[1]
        log.info("relay client connected from port %s", peer)
        try:
            for message in conn:
                if self._stopping.is_set():
                    break
                if not client.bucket.allow():
                    conn.close(CLOSE_RATE_LIMITED, "too many messages; slow down")
                    break
                data = message.encode() if isinstance(message, str) else message
                if not self.publish_up(data):
                    conn.close(CLOSE_BROKER_DOWN, "the agent is not connected to the fleet broker")
                    break
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._clients.discard(client)
            client.closed.set()
            try:
                client.outgoing.put_nowait(None)
            except queue.Full:
                pass  # the writer fails its next send on the closed connection and ends
            log.info("relay client from port %s disconnected", peer)

    def _write(self, client: _Client) -> None:
        from websockets.exceptions import ConnectionClosed

        while True:
            message = client.outgoing.get()
            if message is None or client.closed.is_set():
                return
            try:
                client.conn.send(message)
            except ConnectionClosed:
                return

    def _warn(self, key: str, msg: str, *args: Any) -> None:
        """Log a recurring problem once a minute at most."""
        now = time.monotonic()
        if now - self._warned.get(key, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._warned[key] = now
            log.warning(msg, *args)


class _QuietHandshakes(logging.Filter):
    """A port probe or a client that is not HTTP is worth a debug line, not an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "opening handshake failed":
            log.debug("local connection closed before a valid request: %s", record.exc_info and record.exc_info[1])
            return False
        return True


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    data = json.dumps(body).encode()
    all_headers = Headers({"Content-Type": "application/json", "Content-Length": str(len(data)),
                           "Cache-Control": "no-store", "Connection": "close", **(headers or {})})
    reason = {200: "OK", 403: "Forbidden", 404: "Not Found", 503: "Service Unavailable"}.get(status, "")
    return Response(status, reason, all_headers, data)
