"""Live events: an in-process bus with a replay buffer, so an SSE client resumes by `Last-Event-ID` on any replica.

Each event is numbered in its origin's own sequence (`origins.py`), and the SSE id after it is the position the
stream has reached in every origin's sequence; `follow()` turns such an id back into exactly the buffered events
the client has not had, or says it cannot (a `Mark` with a reset reason) instead of skipping silently.

Events another replica relayed carry its name in `origin`; only events that arose here (`origin` None) reach the
taps, so a relayed event is never relayed again. `id` is a plain local counter for the service's own followers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fleet_service.live.origins import EXPIRED, GAP, UNKNOWN, Origins, decode, merge, new_origin

RESET_TEXT = {
    EXPIRED: "events after this point are no longer held: re-read the current state",
    UNKNOWN: "this id is not from the replicas running now (a restart or another deployment): re-read the state",
    GAP: "events were lost between replicas: re-read the current state",
}


@dataclass(frozen=True)
class Event:
    type: str
    data: dict[str, Any]
    id: int = 0  # this process's own order (internal followers)
    device_id: str | None = None
    ts: int = field(default_factory=lambda: int(time.time() * 1000))
    origin: str | None = None  # the relaying replica's name; None when the event arose here
    source: str = ""  # the origin's name in ids (`origins.py`) ...
    seq: int = 0  # ... and its number there
    cursor: str = ""  # the SSE id: the stream's position once this event is delivered

    def to_sse(self) -> str:
        body = json.dumps({"type": self.type, "ts": self.ts, **self.data}, separators=(",", ":"), default=str)
        return f"id: {self.cursor}\nevent: {self.type}\ndata: {body}\n\n"


@dataclass(frozen=True)
class Mark:
    """Not an event: where a stream stands. With `reset`, the client has missed events this replica cannot replay
    and must re-read what it shows; without, it is the position to resume from (the start of a fresh stream)."""

    cursor: str
    reset: str | None = None

    def to_sse(self) -> str:
        if self.reset is None:
            return f"id: {self.cursor}\n\n"
        body = {"type": "reset", "ts": int(time.time() * 1000), "reason": self.reset, "detail": RESET_TEXT[self.reset]}
        return f"id: {self.cursor}\nevent: reset\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


Item = Event | Mark


class EventBus:
    """Fan-out to subscribers; each subscriber has a bounded queue and is dropped if it cannot keep up."""

    def __init__(self, buffer: int = 10_000, subscriber_queue: int = 5_000, origin: str | None = None) -> None:
        self._ids = itertools.count(1)
        self.origins = Origins(origin or new_origin())
        self._recent: deque[Event] = deque(maxlen=max(1, buffer))
        # each subscriber's queue, and the event types it takes (None: every type)
        self._subscribers: dict[asyncio.Queue[Item | None], frozenset[str] | None] = {}
        self._queue_size = subscriber_queue
        self.published = 0
        self.taps: list[Callable[[Event], None]] = []  # see every local event (the replica relay)

    @property
    def origin(self) -> str:
        return self.origins.local

    def publish(
        self,
        type: str,
        data: dict[str, Any],
        device_id: str | None = None,
        *,
        origin: str | None = None,
        ts: int | None = None,
        source: str | None = None,
        seq: int | None = None,
    ) -> Event | None:
        """Put an event on the bus. A relayed one (`origin` set) is filed under `source`/`seq`; one already had
        (a repeated relay batch) is dropped (None), and a jump in `seq` tells every stream it missed some."""
        if origin is None:
            source, seq = self.origins.local, self.origins.next_local()
        else:
            source = source or origin
            seq, gap = self.origins.arrive(source, seq)
            if seq is None:
                return None
            if gap:  # the reset's position stops short of this event, which follows it
                self._broadcast(Mark(self.origins.cursor(before=(source, seq)), GAP))
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            self.origins.evicted(old.source, old.seq)
        event = Event(
            type,
            data,
            next(self._ids),
            device_id,
            ts if ts is not None else int(time.time() * 1000),
            origin,
            source,
            seq,
            self.origins.cursor(),
        )
        self._recent.append(event)
        self.published += 1
        for q, types in list(self._subscribers.items()):
            if types is not None and type not in types:
                continue
            self._put(q, event)
        if origin is None:
            for tap in self.taps:
                tap(event)
        return event

    def heartbeat(self, source: str, last: int) -> None:
        """Another replica's last number: if some of its events never arrived, every stream is told."""
        if self.origins.heartbeat(source, last):
            self._broadcast(Mark(self.origins.cursor(), GAP))

    def retire_quiet(self) -> list[str]:
        return self.origins.retire_quiet()

    def _put(self, q: asyncio.Queue[Item | None], item: Item) -> None:
        if q.qsize() >= self._queue_size:  # the spare slot takes the hang-up sentinel
            self._subscribers.pop(q, None)
            q.put_nowait(None)
        else:
            q.put_nowait(item)

    def _broadcast(self, mark: Mark) -> None:
        for q in list(self._subscribers):
            self._put(q, mark)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def _attach(self, types: frozenset[str] | None) -> asyncio.Queue[Item | None]:
        q: asyncio.Queue[Item | None] = asyncio.Queue(self._queue_size + 1)
        self._subscribers[q] = types
        return q

    async def subscribe(
        self, last_event_id: int | None = None, types: frozenset[str] | None = None
    ) -> AsyncGenerator[Event, None]:
        """For the service's own followers: replay what came after local id `last_event_id` (if still buffered),
        then follow live events; only events of `types` when given (the others are never queued here)."""
        backlog = [e for e in self._recent if e.id > last_event_id] if last_event_id is not None else []
        if types is not None:
            backlog = [e for e in backlog if e.type in types]
        q = self._attach(types)
        try:
            for old in backlog:
                yield old
            seen = backlog[-1].id if backlog else -1
            while True:
                item = await q.get()
                if item is None:  # too slow: the client reconnects with Last-Event-ID
                    return
                if isinstance(item, Event) and item.id > seen:
                    yield item
        finally:
            self._subscribers.pop(q, None)

    def follow(self, resume: str | None = None, types: frozenset[str] | None = None) -> Stream:
        """An SSE stream: from `resume` (a Last-Event-ID) when this replica holds everything after it, else from
        now. Its `opening` is a `Mark`: the position of a fresh stream, or a reset with its reason; None for a
        stream that resumes exactly (it starts with the replayed events). A `Mark` may come later (a relay gap)."""
        opening: Mark | None = None
        backlog: list[Event] = []
        ahead: dict[str, int] = {}
        if resume is None:
            opening = Mark(self.origins.cursor())
        else:
            position = decode(resume)
            reason = UNKNOWN if position is None else self.origins.problem(position)
            if reason is not None or position is None:
                opening = Mark(self.origins.cursor(), reason)
            else:
                backlog = [
                    e for e in self._recent if e.seq > position.get(e.source, 0) and (types is None or e.type in types)
                ]
                # Events the client had from another replica that have not reached this one yet are skipped when
                # they come, and its ids keep saying it had them.
                ahead = self.origins.ahead(position)
        q = self._attach(types)
        return Stream(opening, backlog, ahead, q, lambda: self._subscribers.pop(q, None))


class Stream:
    """What one SSE client reads: the replayed events, then live events and marks (`close()` when done)."""

    def __init__(
        self,
        opening: Mark | None,
        backlog: list[Event],
        ahead: dict[str, int],
        queue: asyncio.Queue[Item | None],
        detach: Callable[[], object],
    ) -> None:
        self.opening = opening
        self._backlog = deque(backlog)
        self._ahead = ahead  # origin -> the number the client had, while this replica has less
        self._queue = queue
        self._detach = detach

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Item:
        if self._backlog:
            return self._stamped(self._backlog.popleft())
        while True:
            item = await self._queue.get()
            if item is None:  # too slow: the client reconnects with Last-Event-ID
                self.close()
                raise StopAsyncIteration
            if isinstance(item, Event) and self._ahead:
                limit = self._ahead.get(item.source)
                if limit is not None:
                    if item.seq >= limit:
                        del self._ahead[item.source]
                    if item.seq <= limit:
                        continue
            return self._stamped(item)

    def _stamped(self, item: Item) -> Item:
        return replace(item, cursor=merge(item.cursor, self._ahead)) if self._ahead else item

    def close(self) -> None:
        self._detach()
