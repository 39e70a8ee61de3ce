"""Server-Sent Events: live presence, heartbeats, metrics, logs, command and config status."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from fleet_service.api.deps import Ctx, Viewer
from fleet_service.context import ServiceContext
from fleet_service.errors import Invalid, TooManyRequests
from fleet_service.live.bus import Event, Mark
from protocol.ids import DEVICE_ID_RE

router = APIRouter(tags=["events"])
KEEPALIVE_S = 15.0
MAX_CHUNK_EVENTS = 500
MAX_DEVICE_IDS = 1000  # a page of the unit list is at most 500 rows
MAX_TYPES = 32
NOTE_EVERY_S = 1.0  # a stream whose filters pass nothing still moves its resume point on this often
_TYPE_RE = re.compile(r"[a-z][a-z_]{0,31}")


def _device_ids(values: list[str] | None) -> frozenset[str] | None:
    """`device_id` given repeated and/or comma-separated: the set of units, or None for the whole fleet."""
    if not values:
        return None
    ids = {part.strip() for value in values for part in value.split(",")} - {""}
    if len(ids) > MAX_DEVICE_IDS:
        raise Invalid(f"device_id: at most {MAX_DEVICE_IDS} units per stream, got {len(ids)}")
    bad = sorted(i for i in ids if not DEVICE_ID_RE.fullmatch(i))
    if bad:
        raise Invalid(f"device_id: {bad[0][:80]!r} is not a unit id")
    return frozenset(ids) or None


def _types(value: str | None, name: str) -> frozenset[str] | None:
    if not value:
        return None
    names = {t.strip() for t in value.split(",")} - {""}
    if len(names) > MAX_TYPES:
        raise Invalid(f"{name}: at most {MAX_TYPES} event types")
    bad = sorted(t for t in names if not _TYPE_RE.fullmatch(t))
    if bad:
        raise Invalid(f"{name}: {bad[0][:40]!r} is not an event type name")
    return frozenset(names) or None


def _opening(mark: Mark | None, ctx: ServiceContext) -> str:
    """The first write: the reconnect delay, and the start of a fresh stream or the reset of one that cannot
    resume (nothing more for a stream that resumes exactly: it starts with the replayed events)."""
    if mark is not None and mark.reset is not None:
        ctx.registry.inc("fleet_events_resets_total", reason=mark.reset)
    return "retry: 2000\n: connected\n\n" + (mark.to_sse() if mark is not None else "")


async def _stream(
    request: Request, ctx: ServiceContext, resume: str | None, wanted_event: Callable[[Event], bool]
) -> AsyncIterator[str]:
    """The response body: the opening, then events (several to a write), resets and resume points."""
    stream = ctx.bus.follow(resume)
    next_event = asyncio.ensure_future(stream.__anext__())
    opening = _opening(stream.opening, ctx)
    # the resume point reached, and the last one the client was given
    position = sent = stream.opening.cursor if stream.opening is not None else (resume or "")
    try:
        yield opening
        sent_at = time.monotonic()
        while True:
            done, _ = await asyncio.wait({next_event}, timeout=KEEPALIVE_S)
            if not done:
                # Checked here only: per event it cost more than the event itself (a task group each time),
                # and a write to a closed connection fails anyway.
                if await request.is_disconnected():
                    return
                note = f"id: {position}\n\n" if position != sent else ""
                sent, sent_at = position, time.monotonic()
                yield note + ": keepalive\n\n"
                continue
            # Whatever is already queued goes out in one write: thousands of units make thousands of
            # events a second, and a write (through every middleware) per event was the bulk of the cost.
            chunk: list[str] = []
            while next_event.done():
                try:
                    item = next_event.result()
                except StopAsyncIteration:
                    if chunk:
                        yield "".join(chunk)
                    return
                position = item.cursor
                if isinstance(item, Mark):
                    chunk.append(item.to_sse())
                    sent = position
                    if item.reset is not None:
                        ctx.registry.inc("fleet_events_resets_total", reason=item.reset)
                elif wanted_event(item):
                    chunk.append(item.to_sse())
                    sent = position
                next_event = asyncio.ensure_future(stream.__anext__())
                if len(chunk) >= MAX_CHUNK_EVENTS:
                    break
                await asyncio.sleep(0)  # lets the read run: done now if another event was queued
            now = time.monotonic()
            if chunk:
                sent_at = now
            elif position != sent and now - sent_at >= NOTE_EVERY_S:
                # Nothing here passed the filters: the client's resume point moves on all the same, so a
                # reconnect replays from here instead of from an event the buffer may have dropped by then.
                chunk.append(f"id: {position}\n\n")
                sent, sent_at = position, now
            if chunk:
                yield "".join(chunk)
    finally:
        next_event.cancel()
        await asyncio.gather(next_event, return_exceptions=True)
        stream.close()


class _EventStream(StreamingResponse):
    """Gives its caller's stream slot back however the response ends (also when its body never started)."""

    def __init__(self, *args, release, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@router.get(
    "/api/events",
    response_class=StreamingResponse,
    description="Live events of the fleet as Server-Sent Events. A client that shows only some units subscribes to "
    "those (`device_id`, up to 1000) and keeps the few fleet-wide events it needs for totals with `fleet_types`: at "
    "thousands of units the whole fleet's metrics are hundreds of events a second. Ids mean the same on every "
    "replica: a reconnect with `Last-Event-ID` (to any replica) replays exactly the missed events that pass the same "
    "filters. When the replica cannot (the point is older than its buffer, or from a replica it does not know, e.g. "
    "one that restarted), the stream starts with an `event: reset` (`reason`: `expired`, `unknown`; later `gap` "
    "when events were lost between replicas): re-read the state you show, then follow the stream.",
    responses={
        200: {
            "description": "Server-sent events (`event:` type, `id:`, `data:` JSON); resumes after Last-Event-ID, "
            "or starts with `event: reset` when it cannot",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def events(
    request: Request,
    ctx: Ctx,
    who: Viewer,
    device_id: Annotated[
        list[str] | None,
        Query(
            description=f"only these units' events: ids comma-separated and/or the parameter repeated, at most "
            f"{MAX_DEVICE_IDS} (422 beyond, or for a malformed id); events of no unit (rollouts) are left out"
        ),
    ] = None,
    types: Annotated[str | None, Query(description="comma-separated event types")] = None,
    fleet_types: Annotated[
        str | None,
        Query(
            description="comma-separated event types sent for EVERY unit even when `device_id` narrows the stream "
            "(e.g. `presence,device` keeps fleet totals live while metrics come only for the units shown); "
            "`types` still applies"
        ),
    ] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    units = _device_ids(device_id)
    wanted = _types(types, "types")
    everywhere = _types(fleet_types, "fleet_types") or frozenset()
    resume = last_event_id.strip() if last_event_id and last_event_id.strip() else None

    streams = request.app.state.event_streams
    if not streams.acquire(who.label):
        raise TooManyRequests(f"at most {streams.limit} event streams at a time per credential; close one first", 5)

    def wanted_event(event: Event) -> bool:
        if wanted and event.type not in wanted:
            return False
        return units is None or event.device_id in units or (event.device_id is not None and event.type in everywhere)

    return _EventStream(
        _stream(request, ctx, resume, wanted_event),
        media_type="text/event-stream",
        release=lambda: streams.release(who.label),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
