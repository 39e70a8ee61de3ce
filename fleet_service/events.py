"""Live events: an in-process bus with a replay buffer so SSE clients resume by `Last-Event-ID`.

Ids are this replica's own sequence. Events another replica relayed carry its name in `origin`; only events
that arose here (`origin` None) reach the taps, so a relayed event is never relayed again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    type: str
    data: dict[str, Any]
    id: int = 0
    device_id: str | None = None
    ts: int = field(default_factory=lambda: int(time.time() * 1000))
    origin: str | None = None

    def to_sse(self) -> str:
        body = json.dumps({"type": self.type, "ts": self.ts, **self.data}, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.type}\ndata: {body}\n\n"


class EventBus:
    """Fan-out to subscribers; each subscriber has a bounded queue and is dropped if it cannot keep up."""

    def __init__(self, buffer: int = 10_000, subscriber_queue: int = 5_000) -> None:
        # Ids start at the current time in ms so a restarted service never reuses an id a client saw.
        self._ids = itertools.count(int(time.time() * 1000))
        self._recent: deque[Event] = deque(maxlen=buffer)
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._queue_size = subscriber_queue
        self.published = 0
        self.taps: list[Callable[[Event], None]] = []  # see every local event (the replica relay)

    def publish(self, type: str, data: dict[str, Any], device_id: str | None = None, *, origin: str | None = None,
                ts: int | None = None) -> Event:
        event = Event(type, data, next(self._ids), device_id, ts if ts is not None else int(time.time() * 1000),
                      origin)
        self._recent.append(event)
        self.published += 1
        for q in list(self._subscribers):
            if q.qsize() >= self._queue_size:  # the spare slot takes the hang-up sentinel
                self._subscribers.discard(q)
                q.put_nowait(None)
            else:
                q.put_nowait(event)
        if origin is None:
            for tap in self.taps:
                tap(event)
        return event

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def subscribe(self, last_event_id: int | None = None) -> AsyncIterator[Event]:
        """Replay what came after `last_event_id` (if still buffered), then follow live events."""
        q: asyncio.Queue[Event | None] = asyncio.Queue(self._queue_size + 1)
        backlog = [e for e in self._recent if e.id > last_event_id] if last_event_id is not None else []
        self._subscribers.add(q)
        try:
            for event in backlog:
                yield event
            seen = backlog[-1].id if backlog else -1
            while True:
                event = await q.get()
                if event is None:  # too slow: the client reconnects with Last-Event-ID
                    return
                if event.id > seen:
                    yield event
        finally:
            self._subscribers.discard(q)
