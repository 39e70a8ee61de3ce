"""The service's link to the broker in its own process (`fleet up`): no MQTT connection, no second copy.

Units' messages come straight from the embedded broker's consumer hook, in each unit's order; commands,
desired configs (retained) and relay messages go out through the broker's internal publish path. Same
interface as MqttLink, so everything above the link does not know which one it has.

"Connected" means the link is running and the broker is up. While the link is stopped, units' messages wait
in the broker (acknowledged, each unit held at its current message) and arrive when the link runs again, as
a persistent session's would; `close()` (at shutdown) lets them go.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fleet_service.broker_link.base import BrokerUnavailable, ConnectHook
from fleet_service.prometheus import Registry

if TYPE_CHECKING:
    from broker.server import EmbeddedBroker

log = logging.getLogger(__name__)
# (topic, payload, retained) for every message matching the link's filters.
InboundHandler = Callable[[str, bytes, bool], Awaitable[None]]

_POLL_S = 0.2


def filters_regex(filters: list[str]) -> re.Pattern[str]:
    """One regular expression matching the topic names any of the MQTT topic filters matches."""
    alternatives = []
    for topic_filter in filters:
        levels = topic_filter.split("/")
        tail = ""
        if levels[-1] == "#":
            levels.pop()
            tail = "(?:/.*)?" if levels else ".*"
        body = "/".join("[^/]*" if level == "+" else re.escape(level) for level in levels)
        alternatives.append(body + tail)
    return re.compile("|".join(f"(?:{a})" for a in alternatives) or "(?!)")


class EmbeddedLink:
    def __init__(
        self, broker: EmbeddedBroker, filters: list[str], on_message: InboundHandler, registry: Registry
    ) -> None:
        """`broker` is started or soon started; its consumer hook is to be given `consume` (the builder does)."""
        self._broker = broker
        self._wanted = filters_regex(filters).fullmatch
        self._extra: set[str] = set()  # subscribe(): remote sessions' uplinks
        self._on_message = on_message
        self._registry = registry
        self._gate = asyncio.Event()  # set while messages may pass: connected, or closed
        self._closed = False
        self._final = False  # the broker is stopping for good: its last messages must still pass
        self.held = 0  # publishers waiting for the link to run again
        self.connected = asyncio.Event()
        self.connections = 0  # times the link came up
        self.on_connect: list[ConnectHook] = []
        registry.describe(
            "fleet_ingest_link_backlog",
            "gauge",
            "Messages acknowledged by the embedded broker, not yet handed to ingest",
        )
        registry.gauge_callback("fleet_ingest_link_backlog", self.backlog)

    def backlog(self) -> int:
        return self._broker.inbound_backlog() + self.held

    async def run(self) -> None:
        """Up while the broker runs; waits for it when it does not. Never returns; cancel to stop the link."""
        while True:
            if not self._broker.running:
                await asyncio.sleep(_POLL_S)
                continue
            self._up()
            try:
                await self._broker.wait_stopped()
            finally:
                self._lost()

    def _up(self) -> None:
        self.connections += 1
        self.connected.set()
        self._gate.set()
        self._registry.set("fleet_broker_connected", 1)
        log.info("ingesting from the embedded broker")
        for hook in self.on_connect:
            asyncio.create_task(hook())

    def _lost(self) -> None:
        self.connected.clear()
        if not self._closed and not self._final:
            self._gate.clear()
        self._registry.set("fleet_broker_connected", 0)

    def stopping(self) -> None:
        """Shutdown is about to stop the broker: keep the gate open, so a client task the broker cancels while
        handing over its acknowledged backlog reaches ingest instead of waiting for a link that only opens the
        gate once the broker's stop has returned (that wait hung `fleet up` on SIGTERM)."""
        self._final = True
        self._gate.set()

    def close(self) -> None:
        """Stop consuming for good (shutdown): publishers held for the link are let go, later messages ignored."""
        self._closed = True
        self._gate.set()
        self._broker.remove_consumer(self.consume)

    async def subscribe(self, topic: str) -> None:
        if "+" in topic or "#" in topic:
            raise ValueError(f"subscribe() takes a topic name, not the filter {topic!r}")
        self._extra.add(topic)

    async def unsubscribe(self, topic: str) -> None:
        self._extra.discard(topic)

    async def consume(self, topic: str, payload: bytes | bytearray, _qos: int, _retain: bool) -> None:
        if topic not in self._extra and not self._wanted(topic):
            return
        if not self._gate.is_set():
            self.held += 1
            try:
                await self._gate.wait()
            finally:
                self.held -= 1
        if self._closed:
            return
        # A live message, as a subscriber sees it: the retain flag is only set on stored messages it is sent.
        await self._on_message(topic, payload if type(payload) is bytes else bytes(payload), False)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Route a message to the units subscribed to `topic` (retained when asked) once the broker took it."""
        if not self.connected.is_set() or not self._broker.running:
            raise BrokerUnavailable("the embedded MQTT broker is not running")
        try:
            await asyncio.wait_for(self._broker.publish(topic, payload, qos, retain), timeout)
        except TimeoutError as exc:
            raise BrokerUnavailable(f"publish to the embedded broker timed out after {timeout} s") from exc
