"""Ingest pipeline: broker messages -> bounded queue -> batched transactions -> live events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiomqtt
from sqlalchemy.engine import Engine

from fleet_service.events import EventBus
from fleet_service.ingest.acks import AckSender
from fleet_service.ingest.badlog import BadMessageLog
from fleet_service.ingest.persister import DatabaseUnavailable, Inbound, Outcome, Persisted, Persister
from fleet_service.telemetry import Registry
from protocol.ids import now_ms

log = logging.getLogger(__name__)
OutcomeListener = Callable[[Outcome], Awaitable[None] | None]
RelayHandler = Callable[[str, bytes], Awaitable[None]]


class Ingest:
    def __init__(self, engine: Engine, registry: Registry, bus: EventBus, *, batch_max: int = 1000,
                 queue_max: int = 200_000) -> None:
        self._registry = registry
        self._bus = bus
        self.badlog = BadMessageLog(registry)
        self._persister = Persister(engine, registry, self.badlog)
        self.acks = AckSender(registry)  # its publish is set, and its run() started, by the service context
        self._batch_max = batch_max
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue(queue_max)
        self.listeners: list[OutcomeListener] = []
        self.relay_handler: RelayHandler | None = None
        registry.gauge_callback("fleet_ingest_queue_depth", self.queue.qsize)

    async def handle(self, message: aiomqtt.Message) -> None:
        """Called by the MQTT broker link for every message; waits (back-pressure) when the queue is full."""
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
        await self.accept(message.topic.value, payload, bool(message.retain))

    async def accept(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """One message from a unit (any link); waits (back-pressure) when the queue is full."""
        if topic.endswith("/relay/up"):
            if self.relay_handler is not None:
                await self.relay_handler(topic, payload)
            return
        item = Inbound(topic, payload, now_ms(), retained)
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            await self.queue.put(item)

    async def run(self) -> None:
        """Drain the queue in batches; a batch the database refuses is retried, never dropped."""
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self._batch_max:
                try:
                    batch.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            result = await self._persist_with_retry(batch)
            self.acks.send(result.acks)
            self._registry.inc("fleet_ingest_batches_total")
            self._registry.set("fleet_ingest_lag_seconds", max(0, now_ms() - batch[0].received_ms) / 1000)
            for outcome in result.outcomes:
                self._bus.publish(outcome.type, outcome.data, outcome.device_id)
                for listener in self.listeners:
                    try:
                        result = listener(outcome)
                        if asyncio.iscoroutine(result):
                            await result
                    except Exception:
                        log.exception("ingest listener failed for %s", outcome.type)

    async def _persist_with_retry(self, batch: list[Inbound]) -> Persisted:
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(self._persister.persist, batch)
            except DatabaseUnavailable as exc:
                self._registry.inc("fleet_ingest_db_errors_total")
                log.error("database unavailable, holding %d messages: %s", len(batch), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception:  # persist() isolates every message; this is a bug outside them: nothing is acked
                log.exception("ingest batch of %d failed; not acknowledged, units will resend", len(batch))
                self._registry.inc("fleet_ingest_dropped_total", len(batch), reason="internal_error")
                return Persisted()

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is persisted (used on shutdown and in tests)."""
        deadline = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
