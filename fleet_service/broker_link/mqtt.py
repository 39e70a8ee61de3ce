"""The service's MQTT connection: persistent session, explicit reconnect loop, acknowledged publishes."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt

from fleet_service.broker_link.base import BrokerUnavailable, ConnectHook
from fleet_service.prometheus import Registry
from fleet_service.settings import BrokerTarget

__all__ = ["BrokerUnavailable", "MessageHandler", "MqttLink"]

log = logging.getLogger(__name__)
MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]


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
    ) -> None:
        self._target = target
        self._client_id = client_id
        self._filters = filters
        self._on_message = on_message
        self._registry = registry
        self._keepalive = keepalive
        self._cap = backoff_cap_s
        self._client: aiomqtt.Client | None = None
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
        return len(client.messages) if client is not None else 0

    def _make_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            hostname=self._target.host,
            port=self._target.port,
            username=self._target.username,
            password=self._target.password,
            identifier=self._client_id,
            clean_session=False,
            keepalive=self._keepalive,
            timeout=10,
            tls_context=ssl.create_default_context() if self._target.tls else None,
            # Commands and config are small packets: without this, Nagle holds one back until the broker's
            # delayed ACK (~40 ms on Linux) whenever the previous one is still unacknowledged.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def run(self) -> None:
        """Connect, subscribe, consume; on any failure wait (exponential, jittered) and start over. Never returns."""
        attempt = 0
        while True:
            try:
                async with self._make_client() as client:
                    self._client = client
                    for topic_filter in [*self._filters, *self._extra]:
                        await client.subscribe(topic_filter, qos=1)
                    attempt = 0
                    self.connections += 1
                    self.connected.set()
                    self._registry.set("fleet_broker_connected", 1)
                    log.info("connected to broker %r as %s", self._target, self._client_id)
                    for hook in self.on_connect:
                        asyncio.create_task(hook())
                    async for message in client.messages:
                        await self._on_message(message)
            except aiomqtt.MqttError as exc:
                self._lost()
                refused = "not authori" in str(exc).lower() or "bad user" in str(exc).lower()
                attempt = max(attempt + 1, 6 if refused else 0)
                delay = min(self._cap, 0.5 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)
                log.warning("broker link down (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self._lost()
                raise

    async def subscribe(self, topic: str) -> None:
        self._extra.add(topic)
        client = self._client
        if client is None or not self.connected.is_set():
            raise BrokerUnavailable("not connected to the MQTT broker")
        try:
            await asyncio.wait_for(client.subscribe(topic, qos=1), 10.0)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise BrokerUnavailable(f"subscribe failed: {exc}") from exc

    async def unsubscribe(self, topic: str) -> None:
        self._extra.discard(topic)
        client = self._client
        if client is None or not self.connected.is_set():
            return  # a persistent session may keep it: what still arrives for it is dropped by its handler
        try:
            await asyncio.wait_for(client.unsubscribe(topic), 10.0)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.debug("unsubscribe from %s failed: %s", topic, exc)

    def stopping(self) -> None:
        """Nothing to do: the broker is another process, what it acknowledged is its own to keep."""

    def close(self) -> None:
        """Nothing to do: cancelling run() ends the connection (the session stays, for the next start)."""

    def _lost(self) -> None:
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
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise BrokerUnavailable(f"publish to the broker failed: {exc}") from exc
