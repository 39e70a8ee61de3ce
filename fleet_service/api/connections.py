"""Connection caps: long-lived streams per caller, and a deadline for receiving a request.

uvicorn bounds the number of connections (`limit_concurrency`) but arms no timer before a request's head has
arrived: a client that opens a socket and sends nothing, or one header byte every few seconds (slowloris), holds
its connection, and with it one of the `limit_concurrency` slots, for ever. `read_timeout_protocol` gives every
request a deadline from its first byte (or from the connection's opening) to its last.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

__all__ = ["PerIdentityLimit", "read_timeout_protocol"]


class PerIdentityLimit:
    """At most `limit` concurrent holders per identity (event streams, relay sockets) on this replica."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, identity: str) -> bool:
        with self._lock:
            if self._held[identity] >= self.limit:
                return False
            self._held[identity] += 1
            return True

    def release(self, identity: str) -> None:
        with self._lock:
            self._held[identity] -= 1
            if self._held[identity] <= 0:
                del self._held[identity]

    def held(self, identity: str) -> int:
        with self._lock:
            return self._held[identity]


def read_timeout_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools, else h11) with a read deadline on every request.

    The clock starts when the connection opens, or at the first byte of the next request on a kept-alive one, and
    stops once the request's head and body are in, or when the connection becomes a WebSocket. When it runs out
    the connection is closed. Waiting for a response (a slow route, an event stream) is not limited by it.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class ReadTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _read_timer: asyncio.TimerHandle | None = None
        _read_cycle: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._read_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            if self._read_timer is None:
                return
            if self.transport.get_protocol() is not self:  # upgraded to a WebSocket
                self._disarm()
            elif self.cycle is not None and self.cycle is not self._read_cycle and not self.cycle.more_body:
                self._disarm()  # this request's head and body are in

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._read_cycle = self.cycle
            self._read_timer = self.loop.call_later(timeout_s, self._timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _timed_out(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return ReadTimeoutProtocol
