"""The service's MQTT connection: persistent session, explicit reconnect loop, acknowledged publishes.

The connection itself is ours (`broker_link/client.py`): every unit's messages come through it, and a general
client library spent more per received message than ingest does to store it (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable

from fleet_service.broker_link.base import BrokerUnavailable, ConnectHook
from fleet_service.broker_link.client import Connection, ConnectionLost, Refused
from fleet_service.prometheus import Registry
from fleet_service.settings import BrokerTarget

__all__ = ["BrokerUnavailable", "MessageHandler", "MqttLink"]

log = logging.getLogger(__name__)
MessageHandler = Callable[[str, bytes, bool], Awaitable[None]]  # topic, payload, retained


class MqttLink:
    def __init__(
        self,
        target: BrokerTarget,
        client_id: str,
        filters: list[str],
        on_message: MessageHandler,
        registry: Registry,
        *,
        keepalive: int = 30,
        backoff_cap_s: float = 5.0,  # a replica is back within seconds of its broker
        inbox_max: int = 20_000,  # messages received and not yet handed to ingest before reading stops
    ) -> None:
        self._inbox_max = inbox_max
        self._target = target
        self._client_id = client_id
        self._filters = filters
        self._on_message = on_message
        self._registry = registry
        self._keepalive = keepalive
        self._cap = backoff_cap_s
        self._client: Connection | None = None
        self._extra: set[str] = set()  # subscribe(): remote sessions' uplinks held on this replica
        self.connected = asyncio.Event()
        self.connections = 0  # successful connects so far
        self.on_connect: list[ConnectHook] = []
        registry.describe(
            "fleet_ingest_link_backlog",
            "gauge",
            "Messages received from the broker, not yet handed to ingest (MQTT client queue)",
        )
        registry.gauge_callback("fleet_ingest_link_backlog", self.backlog)

    def backlog(self) -> int:
        client = self._client
        return client.pending() if client is not None else 0

    async def _open(self) -> Connection:
        # asyncio turns Nagle off on TCP connections: a small command is not held back behind the previous one
        # until the broker's delayed ACK (~40 ms on Linux).
        client = Connection(inbox_max=self._inbox_max)
        await client.open(
            self._target.host,
            self._target.port,
            self._client_id,
            username=self._target.username,
            password=self._target.password,
            keepalive=self._keepalive,
            clean=False,
            tls=ssl.create_default_context() if self._target.tls else None,
        )
        return client

    async def run(self) -> None:
        """Connect, subscribe, consume; on any failure wait (exponential, jittered) and start over. Never returns."""
        attempt = 0
        while True:
            client: Connection | None = None
            try:
                client = await self._open()
                self._client = client
                # The session's messages may follow CONNACK at once: they are consumed while the subscription is
                # confirmed (a consumer that waited for SUBACK would let the connection stop reading before it).
                consumer = asyncio.create_task(self._consume(client), name="mqtt-consume")
                try:
                    await asyncio.wait_for(client.subscribe([*self._filters, *self._extra], qos=1), 10.0)
                except asyncio.CancelledError:
                    consumer.cancel()
                    raise
                except (ConnectionLost, TimeoutError):
                    client.close()
                    await asyncio.gather(consumer, return_exceptions=True)  # what arrived is handed over first
                    raise
                attempt = 0
                self.connections += 1
                self.connected.set()
                self._registry.set("fleet_broker_connected", 1)
                log.info("connected to broker %r as %s", self._target, self._client_id)
                for hook in self.on_connect:
                    asyncio.create_task(hook())
                await consumer
            except (ConnectionLost, TimeoutError) as exc:
                self._lost(client)
                attempt = max(attempt + 1, 6 if isinstance(exc, Refused) and exc.credentials else 0)
                delay = min(self._cap, 0.5 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)
                log.warning("broker link down (%s); retrying in %.1fs", exc or "timed out", delay)
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self._lost(client)
                raise

    async def _consume(self, client: Connection) -> None:
        """Hand every message to ingest, in order, until the connection is gone and all it received is handed."""
        while True:
            for name, payload, retained in await client.take():
                await self._on_message(name, payload, retained)

    async def subscribe(self, topic: str) -> None:
        self._extra.add(topic)
        client = self._client
        if client is None or not self.connected.is_set():
            raise BrokerUnavailable("not connected to the MQTT broker")
        try:
            await asyncio.wait_for(client.subscribe([topic], qos=1), 10.0)
        except (ConnectionLost, TimeoutError) as exc:
            raise BrokerUnavailable(f"subscribe failed: {exc}") from exc

    async def unsubscribe(self, topic: str) -> None:
        self._extra.discard(topic)
        client = self._client
        if client is None or not self.connected.is_set():
            return  # a persistent session may keep it: what still arrives for it is dropped by its handler
        try:
            await asyncio.wait_for(client.unsubscribe([topic]), 10.0)
        except (ConnectionLost, TimeoutError) as exc:
            log.debug("unsubscribe from %s failed: %s", topic, exc)

    def stopping(self) -> None:
        """Nothing to do: the broker is another process, what it acknowledged is its own to keep."""

    def close(self) -> None:
        """Nothing to do: cancelling run() ends the connection (the session stays, for the next start)."""

    def _lost(self, client: Connection | None) -> None:
        if client is not None:
            client.close()
        self._client = None
        self.connected.clear()
        self._registry.set("fleet_broker_connected", 0)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> None:
        client = self._client
        if client is None or not self.connected.is_set():
            raise BrokerUnavailable("not connected to the MQTT broker")
        try:
            await asyncio.wait_for(client.publish(topic, payload, qos=qos, retain=retain), timeout)
        except (ConnectionLost, TimeoutError) as exc:
            raise BrokerUnavailable(f"publish to the broker failed: {exc or 'timed out'}") from exc
