"""Live events across replicas: each replica relays the events that arose on it through the broker (QoS 0).

Ingest is shared (`$share/fleet/...`), so only the replica that persisted a message sees its outcome. Every
replica publishes its own events, batched, on `fleet/_events/{name}` and subscribes to `fleet/_events/+` without
`$share`; each event carries its origin's name and number (`origins.py`), so an SSE id means the same on every
replica. A replica with nothing to relay says its last number every few seconds: the others learn that it is alive
and whether its last events were lost on the way. Events are live-only: a relay batch lost while the broker is
away is counted, not retried (the database holds the state); the streams that missed it are told to re-read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from fleet_service.broker_link.base import BrokerUnavailable, Publish
from fleet_service.live.bus import Event, EventBus
from fleet_service.live.origins import ORIGIN_RE, origin_for
from fleet_service.prometheus import Registry
from protocol.ids import new_id
from protocol.topics import events_origin, events_topic

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 192 * 1024  # below the 256 KiB message limit the broker is configured with
MAX_PENDING = 50_000  # events held while the broker is slow; the oldest go first
HEARTBEAT_S = 5.0  # a replica with nothing to relay says its last number this often


def relay_name(replica_id: str) -> str:
    """A topic-safe name, unique per process: two replicas never skip each other's events by sharing a name.

    The random suffix also keeps the last level from ever being a unit topic kind (`state`, `logs` ...), so an
    event topic never matches the `$share` ingest filters."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", replica_id).strip("-_.")[:60] or "replica"
    return f"{base}-{new_id()[:8]}"


class EventRelay:
    def __init__(
        self, bus: EventBus, publish: Publish, registry: Registry, name: str, *, flush_interval_s: float = 0.05
    ) -> None:
        self.name = name
        self._bus = bus
        self._publish = publish
        self._registry = registry
        self._topic = events_topic(name)
        self._interval = flush_interval_s
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._last_seq = 0  # the number of the last local event this relay tried to send
        self._since = bus.origins.started_ms
        self._retired_at = time.monotonic()
        registry.describe("fleet_events_relayed_total", "counter", "Live events relayed to the other replicas")
        registry.describe("fleet_events_relay_dropped_total", "counter", "Live events not relayed, by reason")

    def tap(self, event: Event) -> None:
        """The bus's tap (the builder adds it): every local event, to be relayed."""
        self._pending.append(
            {"type": event.type, "device_id": event.device_id, "ts": event.ts, "seq": event.seq, "data": event.data}
        )
        if len(self._pending) > MAX_PENDING:
            del self._pending[: len(self._pending) - MAX_PENDING]
            self._registry.inc("fleet_events_relay_dropped_total", reason="backlog")
        self._wake.set()

    async def run(self) -> None:
        """Publish what piled up, at most every `flush_interval_s`: one broker message carries many events.

        Starts by saying its last number, so the other replicas know this origin before its first events and can
        tell if those never arrive."""
        await self._send(self._wrap([], last=self._last_seq), 0)
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), HEARTBEAT_S)
            except TimeoutError:
                await self._send(self._wrap([], last=self._last_seq), 0)  # nothing to relay: the last number
            else:
                await asyncio.sleep(self._interval)
                self._wake.clear()
                for payload, count in self._messages(self._take()):
                    await self._send(payload, count)
            now = time.monotonic()
            if now - self._retired_at >= HEARTBEAT_S:
                self._retired_at = now
                for origin in self._bus.retire_quiet():
                    log.info("live events: origin %s silent and out of the replay buffer, retired", origin)

    def _take(self) -> list[dict[str, Any]]:
        """The pending events, to be sent now: from here on heartbeats name the last of them (sent or lost)."""
        batch, self._pending = self._pending, []
        if batch:
            self._last_seq = batch[-1]["seq"]
        return batch

    async def _send(self, payload: bytes, count: int) -> None:
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

    def _wrap(self, texts: list[str], last: int | None = None) -> bytes:
        head = f'{{"v":1,"origin":{json.dumps(self.name)},"src":"{self._bus.origin}","since":{self._since}'
        if last is not None:
            head += f',"last":{last}'
        return (head + ',"events":[' + ",".join(texts) + "]}").encode()

    async def handle(self, topic: str, payload: bytes) -> None:
        """A batch from the broker: another replica's events go on our bus; our own echo is ignored."""
        origin = events_origin(topic)
        if origin is None or origin == self.name:
            return
        try:
            batch = json.loads(payload)
            events = batch["events"]
            if not isinstance(events, list):
                raise TypeError("events is not a list")
            # A batch without `src` comes from a replica of an earlier version: a name derived from its topic.
            source = batch.get("src", None) or origin_for(origin)
            if not isinstance(source, str) or not ORIGIN_RE.fullmatch(source):
                raise TypeError("src is not an origin name")
            last, since = batch.get("last"), batch.get("since")
            for value in (last, since):
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                    raise TypeError("last or since is not a number")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._registry.inc("fleet_events_relay_dropped_total", reason="malformed")
            log.warning("malformed event batch from replica %s: %s", origin, exc)
            return
        if since is not None:
            self._bus.origins.started(source, since)
        for item in events:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("type"), str)
                or not isinstance(item.get("data"), dict)
            ):
                continue
            device_id = item.get("device_id") if isinstance(item.get("device_id"), str) else None
            ts = item.get("ts") if isinstance(item.get("ts"), int) else None
            seq = item.get("seq")
            seq = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else None
            self._bus.publish(item["type"], item["data"], device_id, origin=origin, ts=ts, source=source, seq=seq)
        if last is not None:
            self._bus.heartbeat(source, last)
