"""Ingest pipeline: broker messages -> bounded queue -> batched transactions -> live events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Engine

from fleet_service.db.core import table_of
from fleet_service.devices.models import Device
from fleet_service.ingest.acks import AckSender
from fleet_service.ingest.badlog import BadMessageLog
from fleet_service.ingest.budget import UnitBudgets
from fleet_service.ingest.persister import DatabaseUnavailableError, Inbound, Outcome, Persisted, Persister
from fleet_service.ingest.processes import ProcessPersisters, WorkerLost, partition_of
from fleet_service.ingest.telemetry_path import CLOCK, ClockWindow
from fleet_service.live.bus import EventBus
from fleet_service.prometheus import Registry
from protocol.ids import now_ms

log = logging.getLogger(__name__)
BATCH_MAX_BYTES = 8 * 1024 * 1024
OutcomeListener = Callable[[Outcome], Awaitable[None] | None]
RelayHandler = Callable[[str, bytes], Awaitable[None]]
TermHandler = Callable[[str, bytes], None]


class Ingest:
    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        bus: EventBus,
        *,
        batch_max: int = 1000,
        queue_max: int = 200_000,
        queue_max_bytes: int = 64 * 1024 * 1024,
        budgets: UnitBudgets | None = None,
        clock: ClockWindow = CLOCK,
        processes: ProcessPersisters | None = None,
    ) -> None:
        self._registry = registry
        self._bus = bus
        self.badlog = BadMessageLog(registry)
        self._engine = engine
        self._persister = Persister(engine, registry, self.badlog, clock)
        self.acks = AckSender(registry)  # its publish is set, and its run() started, by the service context
        self._batch_max = batch_max
        self.processes = processes
        parts = processes.count if processes is not None else 1
        # One queue per partition; a unit's messages always go to the same one (ingest/processes.py).
        self.queues: list[asyncio.Queue[Inbound]] = [asyncio.Queue(max(1, queue_max // parts)) for _ in range(parts)]
        self.budgets = budgets or UnitBudgets(50.0, 512 * 1024)
        self._max_bytes = queue_max_bytes
        self.queued_bytes = 0
        self._room = asyncio.Event()  # set when queued_bytes went down
        self.listeners: list[OutcomeListener] = []
        self.relay_handler: RelayHandler | None = None
        self.term_handler: TermHandler | None = None  # remote sessions' uplinks: never queued, never stored
        registry.gauge_callback("fleet_ingest_queue_depth", self.depth)
        registry.describe("fleet_ingest_queue_bytes", "gauge", "Payload bytes waiting in the ingest queue")
        registry.gauge_callback("fleet_ingest_queue_bytes", lambda: self.queued_bytes)

    async def accept(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """One message from a unit (any link); waits (back-pressure) when the queue is full."""
        if "/term/" in topic:
            if self.term_handler is not None:
                self.term_handler(topic, payload)
            return
        if topic.endswith("/relay/up"):
            if self.relay_handler is not None:
                await self.relay_handler(topic, payload)
            return
        unit = topic.split("/", 2)[1] if topic.count("/") >= 2 else topic
        if topic.endswith("/state"):
            self.budgets.charge(unit, len(payload))  # presence is never refused: a Will comes only once
        elif not self.budgets.allow(unit, len(payload)):
            self._registry.inc("fleet_ingest_dropped_total", reason="unit_budget")
            return  # not stored, not acknowledged: a real unit sends it again later, within its budget
        # Bounded in bytes as well as in messages: a queue of 256 KiB messages must not take the memory.
        while self.queued_bytes and self.queued_bytes + len(payload) > self._max_bytes:
            self._room.clear()
            await self._room.wait()
        item = Inbound(topic, payload, now_ms(), retained)
        self.queued_bytes += len(payload)
        queue = self.queues[partition_of(unit, len(self.queues))] if len(self.queues) > 1 else self.queues[0]
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            await queue.put(item)

    def depth(self) -> int:
        return sum(q.qsize() for q in self.queues)

    async def run(self) -> None:
        """Drain every partition's queue in batches; a batch the database refuses is retried, never dropped."""
        if self.processes is not None:
            await self.processes.start()
        await asyncio.gather(*(self._run_partition(k) for k in range(len(self.queues))))

    async def _run_partition(self, k: int) -> None:
        queue = self.queues[k]
        while True:
            batch = [await queue.get()]
            size = len(batch[0].payload)
            while len(batch) < self._batch_max and size < BATCH_MAX_BYTES:
                try:
                    batch.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
                size += len(batch[-1].payload)
            result = await self._persist_with_retry(k, batch)
            self.queued_bytes -= size  # counted until persisted: the batch in hand is memory too
            self._room.set()
            self.acks.send(result.acks)
            self._registry.inc("fleet_ingest_batches_total")
            self._registry.set("fleet_ingest_lag_seconds", max(0, now_ms() - batch[0].received_ms) / 1000)
            for outcome in result.outcomes:
                self._bus.publish(outcome.type, outcome.data, outcome.device_id)
                for listener in self.listeners:
                    try:
                        pending = listener(outcome)
                        if asyncio.iscoroutine(pending):
                            await pending
                    except Exception:
                        log.exception("ingest listener failed for %s", outcome.type)

    async def _persist_with_retry(self, k: int, batch: list[Inbound]) -> Persisted:
        delay = 0.5
        while True:
            try:
                if self.processes is not None:
                    return await self.processes.persist(k, batch)
                return await asyncio.to_thread(self._persister.persist, batch)
            except WorkerLost:
                continue  # a new worker takes the same batch at once
            except DatabaseUnavailableError as exc:
                self._registry.inc("fleet_ingest_db_errors_total")
                log.error("database unavailable, holding %d messages: %s", len(batch), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception:  # persist() isolates every message; this is a bug outside them: nothing is acked
                log.exception("ingest batch of %d failed; not acknowledged, units will resend", len(batch))
                self._registry.inc("fleet_ingest_dropped_total", len(batch), reason="internal_error")
                return Persisted()

    async def run_refusals_writer(self, interval_s: float = 2.0) -> None:
        """Add the messages refused over each unit's budget to its `ingest_throttled`, every few seconds."""
        while True:
            await asyncio.sleep(interval_s)
            refused = self.budgets.take_refused()
            if not refused:
                continue
            try:
                await asyncio.to_thread(self._write_refusals, refused)
            # the database is away: keep the counts for the next round
            except Exception as exc:  # noqa: BLE001 (a long-running loop: it must outlive any failed round)
                self.budgets.refused.update(refused)
                log.warning("could not record refused messages: %s", exc)

    def _write_refusals(self, refused: dict[str, int]) -> None:
        table = table_of(Device)
        stmt = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(ingest_throttled=table.c.ingest_throttled + bindparam("b_n"))
        )
        with self._engine.begin() as conn:
            conn.execute(stmt, [{"b_id": unit, "b_n": n} for unit, n in sorted(refused.items())])

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is persisted (used on shutdown and in tests)."""
        deadline = time.monotonic() + timeout
        while self.depth() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
