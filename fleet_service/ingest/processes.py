"""Persisting in worker processes: decoding and writing a batch take the interpreter's lock, so one process
persists about a third of what the broker delivers (docs/performance.md). With FLEET_INGEST_PROCESSES=N the
service keeps N partitions of its queue and N worker processes, each with its own database connection; a unit's
messages always go to the same partition (a hash of its id), one batch at a time, so they are written in the
order they arrived. The worker returns what committed (live events, acks, its counters); the service publishes
them as it does for its own batches. A worker that dies is replaced and the batch it held is written again (every
write is idempotent: logs and samples by their keys, reports by their versions and states).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from fleet_service.ingest.badlog import BadMessageLog
from fleet_service.ingest.persister import DatabaseUnavailableError, Inbound, Persisted, Persister
from fleet_service.ingest.telemetry_path import ClockWindow
from fleet_service.prometheus import LabelKey, Registry
from protocol.heap import settle

__all__ = ["ProcessPersisters", "WorkerLost", "partition_of"]

log = logging.getLogger(__name__)

_persister: Persister | None = None  # in a worker process: its own engine and counters
_counted = Registry()


def partition_of(device_id: str, count: int) -> int:
    """The same partition for a unit in every process and every run (Python's hash() is salted per process)."""
    return zlib.crc32(device_id.encode()) % count


def _start(database_url: str, clock: ClockWindow) -> None:
    """A worker process's start: its engine and persister (the parent's cannot cross a process boundary)."""
    from fleet_service.db.engine import make_engine

    global _persister
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[ingest worker]: %(message)s")
    _persister = Persister(make_engine(database_url), _counted, BadMessageLog(_counted), clock)
    settle()


class WorkerLost(Exception):
    """The worker process died before it answered (it may have committed): the batch is written again."""


@dataclass
class _Done:
    persisted: Persisted | None  # None: the database was unreachable, nothing committed
    error: str
    counted: list[tuple[str, LabelKey, float]]


def _persist(batch: list[Inbound]) -> _Done:
    assert _persister is not None
    try:
        return _Done(_persister.persist(batch), "", _counted.take())
    except DatabaseUnavailableError as exc:
        return _Done(None, str(exc), _counted.take())


def _ready() -> bool:
    return _persister is not None


class ProcessPersisters:
    """N worker processes, one per partition; `persist(k, batch)` writes a batch in worker k."""

    def __init__(self, count: int, database_url: str, clock: ClockWindow, registry: Registry) -> None:
        self.count = count
        self._url = database_url
        self._clock = clock
        self._registry = registry
        self._context = multiprocessing.get_context("spawn")  # no copy of the parent's threads, sockets, loop
        self._workers = [self._new() for _ in range(count)]
        registry.describe("fleet_ingest_worker_restarts_total", "counter", "Ingest worker processes replaced")

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            1, mp_context=self._context, initializer=_start, initargs=(self._url, self._clock), max_tasks_per_child=None
        )

    async def start(self) -> None:
        """Start every worker now (a spawn takes a second or two), not on the first batch."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(w, _ready) for w in self._workers))

    async def persist(self, k: int, batch: list[Inbound]) -> Persisted:
        """What worker k committed; DatabaseUnavailableError or WorkerLost when the batch must be written again."""
        loop = asyncio.get_running_loop()
        try:
            done: _Done = await loop.run_in_executor(self._workers[k], _persist, batch)
        except BrokenProcessPool:
            log.error("ingest worker %d died holding %d messages; a new one writes them", k, len(batch))
            self._registry.inc("fleet_ingest_worker_restarts_total")
            self._workers[k].shutdown(wait=False, cancel_futures=True)
            self._workers[k] = self._new()
            raise WorkerLost(f"ingest worker {k} died") from None
        self._registry.add(done.counted)
        if done.persisted is None:
            raise DatabaseUnavailableError(done.error)
        return done.persisted

    def pids(self) -> list[int]:
        """The worker processes' ids (started ones), for tests and operators."""
        return [pid for w in self._workers for pid in (getattr(w, "_processes", None) or {})]

    def close(self) -> None:
        for worker in self._workers:
            worker.shutdown(wait=True, cancel_futures=False)
