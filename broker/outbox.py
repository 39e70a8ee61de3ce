"""Outbox: what the broker sends to one connection, in order, with a bounded number of unacknowledged messages.

amqtt starts one task per outgoing message with no limit, so a slow subscriber or a large offline
backlog runs out of packet ids (65,535) and messages are lost; messages in flight when a connection
drops are lost too. The outbox keeps a window of in-flight messages and, when the connection ends,
hands back everything not acknowledged so a persistent session can keep it for the next connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

from broker.limits import LogThrottle

log = logging.getLogger(__name__)
_throttle = LogThrottle()


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    data: bytes | bytearray
    qos: int
    retain: bool = False


class Outbox:
    def __init__(self, handler: BrokerProtocolHandler, client_id: str, *, window: int, limit: int) -> None:
        self._handler = handler
        self._client_id = client_id
        self._limit = limit
        self._queue: deque[Outgoing] = deque()
        self._ready = asyncio.Event()
        self._window = asyncio.Semaphore(window)
        self._in_flight: dict[asyncio.Future[object], Outgoing] = {}
        self._unacked: list[Outgoing] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-{self._client_id}")

    def put(self, message: Outgoing) -> bool:
        """Queue a message; False once the outbox is closed (the caller keeps it for the session instead)."""
        if self._closed:
            return False
        if len(self._queue) >= self._limit:
            self.dropped += 1
            if _throttle.allow(self._client_id):
                log.warning(
                    "%s does not keep up: %d messages waiting, dropped %d so far",
                    self._client_id,
                    len(self._queue),
                    self.dropped,
                )
            return True
        self._queue.append(message)
        self._ready.set()
        return True

    async def close(self) -> list[Outgoing]:
        """Stop sending (call after the handler stopped); return the unacknowledged messages in order."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        pending = list(self._in_flight)
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._closed = True
        leftover = [*self._unacked, *self._queue]
        self._queue.clear()
        return leftover

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            await self._window.acquire()
            message = self._queue.popleft()
            future = asyncio.ensure_future(
                self._handler.mqtt_publish(message.topic, message.data, message.qos, message.retain)
            )
            self._in_flight[future] = message
            future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[object]) -> None:
        self._window.release()
        message = self._in_flight.pop(future)
        if not future.cancelled() and future.exception() is None:
            return
        if len(self._unacked) < self._limit:  # kept for the session's next connection
            self._unacked.append(message)
        if not future.cancelled() and _throttle.allow((self._client_id, "send")):
            log.warning("message to %s on %s not acknowledged: %r", self._client_id, message.topic, future.exception())
