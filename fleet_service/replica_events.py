"""Live events across replicas: each replica relays the events that arose on it through the broker (QoS 0).

Ingest is shared (`$share/fleet/...`), so only the replica that persisted a message sees its outcome. Every
replica publishes its own events, batched, on `fleet/_events/{name}` and subscribes to `fleet/_events/+` without
`$share`; what arrives from another replica goes on the local bus with a local id, so each replica's SSE stream
keeps its own monotonic replay ids. Events are live-only: a relay batch lost while the broker is away is counted,
not retried (the database holds the state).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fleet_service.events import Event, EventBus
from fleet_service.ingest.link import BrokerUnavailable
from fleet_service.telemetry import Registry
from protocol.ids import new_id
from protocol.topics import events_origin, events_topic

log = logging.getLogger(__name__)
Publish = Callable[..., Awaitable[None]]
MAX_MESSAGE_BYTES = 192 * 1024  # below the 256 KiB message limit the broker is configured with
MAX_PENDING = 50_000  # events held while the broker is slow; the oldest go first


def relay_name(replica_id: str) -> str:
    """A topic-safe name, unique per process: two replicas never skip each other's events by sharing a name.

    The random suffix also keeps the last level from ever being a unit topic kind (`state`, `logs` ...), so an
    event topic never matches the `$share` ingest filters."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", replica_id).strip("-_.")[:60] or "replica"
    return f"{base}-{new_id()[:8]}"


class EventRelay:
    def __init__(self, bus: EventBus, publish: Publish, registry: Registry, name: str, *,
                 flush_interval_s: float = 0.05) -> None:
        self.name = name
        self._bus = bus
        self._publish = publish
        self._registry = registry
        self._topic = events_topic(name)
        self._interval = flush_interval_s
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        bus.taps.append(self._tap)
        registry.describe("fleet_events_relayed_total", "counter", "Live events relayed to the other replicas")
        registry.describe("fleet_events_relay_dropped_total", "counter", "Live events not relayed, by reason")

    def _tap(self, event: Event) -> None:
        self._pending.append({"type": event.type, "device_id": event.device_id, "ts": event.ts, "data": event.data})
        if len(self._pending) > MAX_PENDING:
            del self._pending[: len(self._pending) - MAX_PENDING]
            self._registry.inc("fleet_events_relay_dropped_total", reason="backlog")
        self._wake.set()

    async def run(self) -> None:
        """Publish what piled up, at most every `flush_interval_s`: one broker message carries many events."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._interval)
            self._wake.clear()
            batch, self._pending = self._pending, []
            for payload, count in self._messages(batch):
                try:
                    await self._publish(self._topic, payload, qos=0)
                    self._registry.inc("fleet_events_relayed_total", count)
                except BrokerUnavailable as exc:
                    self._registry.inc("fleet_events_relay_dropped_total", count, reason="broker")
                    log.debug("relay of %d events dropped: %s", count, exc)

    def _messages(self, events: list[dict[str, Any]]):
        chunk: list[str] = []
        size = 0
        for item in events:
            text = json.dumps(item, separators=(",", ":"), default=str)
            if len(text) > MAX_MESSAGE_BYTES - 100:
                self._registry.inc("fleet_events_relay_dropped_total", reason="too_large")
                continue
            if chunk and size + len(text) > MAX_MESSAGE_BYTES - 100:
                yield self._wrap(chunk), len(chunk)
                chunk, size = [], 0
            chunk.append(text)
            size += len(text) + 1
        if chunk:
            yield self._wrap(chunk), len(chunk)

    def _wrap(self, texts: list[str]) -> bytes:
        return ('{"v":1,"origin":' + json.dumps(self.name) + ',"events":[' + ",".join(texts) + "]}").encode()

    async def handle(self, topic: str, payload: bytes) -> None:
        """A batch from the broker: another replica's events go on our bus; our own echo is ignored."""
        origin = events_origin(topic)
        if origin is None or origin == self.name:
            return
        try:
            events = json.loads(payload)["events"]
            if not isinstance(events, list):
                raise TypeError("events is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            self._registry.inc("fleet_events_relay_dropped_total", reason="malformed")
            log.warning("malformed event batch from replica %s: %s", origin, exc)
            return
        for item in events:
            if not isinstance(item, dict) or not isinstance(item.get("type"), str) or not isinstance(
                    item.get("data"), dict):
                continue
            device_id = item.get("device_id") if isinstance(item.get("device_id"), str) else None
            ts = item.get("ts") if isinstance(item.get("ts"), int) else None
            self._bus.publish(item["type"], item["data"], device_id, origin=origin, ts=ts)
