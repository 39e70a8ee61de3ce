"""End-to-end acknowledgements: tell each unit which of its reliable messages are stored, after the commit.

The broker's PUBACK only says the broker has a message; a broker restart (Mosquitto drops what it queued for
a `$share` group) or a crash of `fleet up` (amqtt acknowledges on receipt, ingest queues in memory) can still
lose it. So a unit keeps every log batch, command result and config report until the service names its
`ack_id` on `fleet/{id}/ack`, and sends it again otherwise; the service stores each message idempotently, so a
message sent twice is stored once. Acks are QoS 0: a lost ack costs one resend, never data.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from fleet_service.broker_link.base import Publish
from fleet_service.prometheus import Registry
from protocol.payloads import MAX_ACK_IDS, Ack, encode
from protocol.topics import Kind, topic

log = logging.getLogger(__name__)


@dataclass
class UnitAcks:
    ids: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)


class AckBook:
    """The acks one ingest batch owes, by unit; handed to the AckSender once the batch committed."""

    def __init__(self) -> None:
        self.units: dict[str, UnitAcks] = {}

    def stored(self, device_id: str, ack_id: str | None) -> None:
        if ack_id:
            self.units.setdefault(device_id, UnitAcks()).ids.append(ack_id)

    def rejected(self, device_id: str, ack_id: str | None, reason: str) -> None:
        if ack_id:
            self.units.setdefault(device_id, UnitAcks()).rejected[ack_id] = reason[:200]

    def merge(self, other: AckBook) -> None:
        for device_id, acks in other.units.items():
            mine = self.units.setdefault(device_id, UnitAcks())
            mine.ids.extend(acks.ids)
            mine.rejected.update(acks.rejected)

    def __bool__(self) -> bool:
        return bool(self.units)


class AckSender:
    """Publishes acks in the background so ingest never waits on the broker; overflow is dropped (units resend)."""

    def __init__(self, registry: Registry, max_pending: int = 100_000) -> None:
        self.publish: Publish | None = None  # set once the broker link exists
        self._registry = registry
        self._queue: asyncio.Queue[tuple[str, UnitAcks]] = asyncio.Queue(max_pending)
        registry.describe("fleet_ingest_acks_total", "counter", "End-to-end acks published to units, by outcome")

    def send(self, book: AckBook) -> None:
        for device_id, acks in book.units.items():
            try:
                self._queue.put_nowait((device_id, acks))
            except asyncio.QueueFull:
                self._registry.inc("fleet_ingest_acks_total", len(acks.ids) + len(acks.rejected), outcome="dropped")

    async def run(self) -> None:
        while True:
            device_id, acks = await self._queue.get()
            try:
                await self._publish(device_id, acks)
            # broker down (or anything else): the unit resends after its timeout, nothing is lost; the loop goes on
            except Exception as exc:  # noqa: BLE001 (a long-running loop: one failed ack must not stop all others)
                self._registry.inc("fleet_ingest_acks_total", len(acks.ids) + len(acks.rejected), outcome="failed")
                log.debug("ack to %s not published: %s", device_id, exc)

    async def _publish(self, device_id: str, acks: UnitAcks) -> None:
        if self.publish is None:
            return
        name = topic(device_id, Kind.ACK)
        rejected = list(acks.rejected.items())
        for start in range(0, max(len(acks.ids), len(rejected)), MAX_ACK_IDS):
            ids = acks.ids[start : start + MAX_ACK_IDS]
            refused = dict(rejected[start : start + MAX_ACK_IDS])
            await self.publish(name, encode(Ack(ids=ids, rejected=refused)), qos=0, retain=False, timeout=5.0)
            self._registry.inc("fleet_ingest_acks_total", len(ids) + len(refused), outcome="published")

    async def drain(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._queue.empty() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
