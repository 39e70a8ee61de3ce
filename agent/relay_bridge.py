"""The recorder's local signalling bridge: a WebSocket on 127.0.0.1 <-> this unit's `relay/down|up` topics.

Every message the unit receives on `relay/down` goes to every connected local client; every message a
local client sends is published to `relay/up` (QoS 1). The same port answers `GET /turn-credentials`
with the unit's cached TURN credentials (agent.turn_fetch), so the recorder never needs the fleet secret.

Threads: the MQTT network thread only drops messages into per-client queues (`on_down`); one thread
accepts connections. This module is all an idle bridge loads: the client side (agent.relay_clients, with
the `websockets` package) is imported on the first connection, so a recorder that never connects costs
the agent a socket and a thread.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from protocol.payloads import MAX_RELAY_BYTES

if TYPE_CHECKING:
    from agent.relay_clients import LocalClient
    from agent.turn_fetch import TurnFetcher

log = logging.getLogger(__name__)

__all__ = ["HOST", "MAX_CLIENTS", "RelayBridge"]

HOST = "127.0.0.1"
MAX_CLIENTS = 8
_WARN_EVERY_S = 60.0


class RelayBridge:
    """Loopback listener bridged to MQTT; `publish_up` returns False when the broker is not connected."""

    def __init__(
        self,
        port: int,
        publish_up: Callable[[bytes], bool],
        turn: TurnFetcher | None = None,
        origins: Sequence[str] = (),
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.port = port
        self.publish_up = publish_up
        self.turn = turn
        self.origins = {o.rstrip("/") for o in origins}
        self.max_clients = max_clients
        self.clients: set[LocalClient] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._handle: Callable[[socket.socket, Any], None] | None = None
        self._accept_thread: threading.Thread | None = None
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
        self.stopping.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._listener.close()
        with self.lock:
            clients = list(self.clients)
        for client in clients:
            client.close_going_away()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)

    @property
    def client_count(self) -> int:
        with self.lock:
            return len(self.clients)

    # MQTT side (network thread: queue only, never block) --------------------------------

    def on_down(self, payload: bytes) -> None:
        """A `relay/down` message: queue it for every local client."""
        if len(payload) > MAX_RELAY_BYTES:
            self.warn("size", "relay/down message over %d bytes dropped", MAX_RELAY_BYTES)
            return
        try:
            message: str | bytes = payload.decode("utf-8")
        except UnicodeDecodeError:
            message = payload  # opaque: passed on as a binary frame
        with self.lock:
            clients = list(self.clients)
        if not clients:
            self.warn("nobody", "relay/down message dropped: no local client is connected")
            return
        for client in clients:
            try:
                client.outgoing.put_nowait(message)
            except queue.Full:
                self.warn("slow", "a local relay client is not reading; message dropped")

    # Local side -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError as exc:
                if self.stopping.is_set():
                    return
                self.warn("accept", "relay bridge accept failed: %s", exc)
                self.stopping.wait(0.5)
                continue
            handle = self._handler()
            if handle is None:
                sock.close()
                continue
            threading.Thread(target=handle, args=(sock, addr), name="agent-relay-conn", daemon=True).start()

    def _handler(self) -> Callable[[socket.socket, Any], None] | None:
        """The connection handler, built on the first connection (the client side is imported then)."""
        if self._handle is None:
            try:
                from agent.relay_clients import connection_handler
            except ImportError as exc:
                self.warn("import", "relay bridge needs the `websockets` package: %s", exc)
                return None
            assert self._listener is not None
            self._handle = connection_handler(self, self._listener)
        return self._handle

    def warn(self, key: str, msg: str, *args: Any) -> None:
        """Log a recurring problem once a minute at most."""
        now = time.monotonic()
        if now - self._warned.get(key, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._warned[key] = now
            log.warning(msg, *args)
