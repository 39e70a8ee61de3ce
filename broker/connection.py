"""Live client connections as the broker tracks them: closing, per-client-id locking, the keepalive watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from amqtt.adapters import WriterAdapter
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, Session

from broker.outbox import Outbox
from broker.wire import ActivityReader

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Connection:
    """One live network connection of a session."""

    client_id: str
    session: Session
    handler: BrokerProtocolHandler
    reader: ActivityReader
    writer: WriterAdapter
    outbox: Outbox
    publish_will: bool = True
    closing: bool = False
    graceful: bool = False
    leftover: ApplicationMessage | None = None
    disconnected: asyncio.Future[DisconnectPacket | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def close(self, *, will: bool = True) -> None:
        """Close as a TCP drop would: the Will fires unless `will` is False."""
        self.publish_will = self.publish_will and will
        self.closing = True
        if not self.disconnected.done():
            self.disconnected.set_result(None)


class KeyedLock:
    """One asyncio.Lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def watch_keepalive(connections: dict[str, Connection], factor: float, interval: float) -> None:
    """Close connections silent for longer than factor x their keepalive (MQTT 3.1.2.10); runs until cancelled.

    amqtt 0.12.1 never enforces the keepalive, so a vanished client's Will would never fire.
    """
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        for conn in list(connections.values()):
            keepalive = conn.session.keep_alive
            if conn.closing or not keepalive:
                continue
            silent = now - conn.reader.last_activity
            if silent > keepalive * factor:
                log.info("closing %s: silent for %.1f s (keepalive %d s)", conn.client_id, silent, keepalive)
                conn.close()
