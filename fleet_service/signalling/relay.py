"""Signalling relay: controllers on WebSockets <-> a unit's `relay/down|up` topics, on every replica."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from fleet_service.broker_link.base import BrokerLink
from fleet_service.prometheus import Registry
from protocol import ProtocolError
from protocol.payloads import MAX_RELAY_BYTES
from protocol.topics import Kind, parse, topic

log = logging.getLogger(__name__)


class DropLog:
    """Log a dropped relay message at most once per unit and reason per `interval_s`; the next line says how many
    were not logged in between. Every drop is counted in `fleet_relay_dropped_total` whether logged or not."""

    def __init__(self, registry: Registry, interval_s: float = 60.0, max_keys: int = 10_000) -> None:
        self._registry = registry
        self._interval = interval_s
        self._max_keys = max_keys
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = defaultdict(int)
        registry.describe("fleet_relay_dropped_total", "counter", "Relay messages dropped, by reason")

    def drop(self, device_id: str, reason: str, message: str, *args: object) -> None:
        self._registry.inc("fleet_relay_dropped_total", reason=reason)
        key = (device_id, reason)
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] += 1
            return
        if len(self._last) >= self._max_keys:
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" ({suppressed} more since the last such line, not logged)"
        log.warning(message, *args)


@dataclass(eq=False)  # identity-hashed: each connection is its own controller
class Controller:
    """One connected controller: an outgoing queue the WebSocket task drains, and a token bucket."""

    device_id: str
    identity: str
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(256))
    rate: float = 20.0
    burst: float = 40.0
    _tokens: float = 40.0
    _stamp: float = field(default_factory=time.monotonic)

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class RelayHub:
    def __init__(self, link: BrokerLink, registry: Registry) -> None:
        self._link = link
        self._registry = registry
        self._controllers: dict[str, set[Controller]] = defaultdict(set)
        self._drops = DropLog(registry)
        registry.describe("fleet_relay_messages_total", "counter", "Relayed signalling messages, by direction")
        registry.gauge_callback("fleet_relay_controllers", lambda: self.controller_count)

    @property
    def controller_count(self) -> int:
        return sum(len(c) for c in self._controllers.values())

    @property
    def unit_count(self) -> int:
        return sum(1 for c in self._controllers.values() if c)

    def attach(self, controller: Controller) -> None:
        self._controllers[controller.device_id].add(controller)

    def detach(self, controller: Controller) -> None:
        group = self._controllers.get(controller.device_id)
        if group is not None:
            group.discard(controller)
            if not group:
                del self._controllers[controller.device_id]

    async def down(self, controller: Controller, message: str | bytes) -> None:
        """Controller -> unit; raises BrokerUnavailable when the broker link is down."""
        data = message.encode() if isinstance(message, str) else message
        await self._link.publish(topic(controller.device_id, Kind.RELAY_DOWN), data, qos=1)
        self._registry.inc("fleet_relay_messages_total", direction="down")

    async def up(self, name: str, payload: bytes) -> None:
        """Unit -> every controller of that unit on this replica (called by ingest for `relay/up`)."""
        try:
            device_id = parse(name).device_id
        except ProtocolError:
            return
        if len(payload) > MAX_RELAY_BYTES:
            self._drops.drop(
                device_id, "too_large", "relay message from %s over %d bytes dropped", device_id, MAX_RELAY_BYTES
            )
            return
        text = payload.decode("utf-8", "replace")
        for controller in list(self._controllers.get(device_id, ())):
            try:
                controller.queue.put_nowait(text)
            except asyncio.QueueFull:
                self._drops.drop(
                    device_id,
                    "controller_full",
                    "controller %s of %s is not reading; message dropped",
                    controller.identity,
                    device_id,
                )
        self._registry.inc("fleet_relay_messages_total", direction="up")
