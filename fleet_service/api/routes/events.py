"""Server-Sent Events: live presence, heartbeats, metrics, logs, command and config status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from fleet_service.api.deps import Ctx, Viewer

router = APIRouter(tags=["events"])
KEEPALIVE_S = 15.0
MAX_CHUNK_EVENTS = 500


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


@router.get("/api/events")
async def events(
    request: Request,
    ctx: Ctx,
    who: Viewer,
    device_id: Annotated[str | None, Query(description="only this unit's events")] = None,
    types: Annotated[str | None, Query(description="comma-separated event types")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    wanted = {t.strip() for t in types.split(",")} if types else None
    try:
        resume = int(last_event_id) if last_event_id else None
    except ValueError:
        resume = None

    streams = request.app.state.event_streams
    if not streams.acquire(who.label):
        raise HTTPException(429, f"at most {streams.limit} event streams at a time per credential; close one first",
                            headers={"Retry-After": "5"})

    def wanted_event(event) -> bool:
        return (not device_id or event.device_id == device_id) and (not wanted or event.type in wanted)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n: connected\n\n"
        events_iter = ctx.bus.subscribe(resume).__aiter__()
        next_event = asyncio.ensure_future(events_iter.__anext__())
        try:
            while True:
                done, _ = await asyncio.wait({next_event}, timeout=KEEPALIVE_S)
                if not done:
                    # Checked here only: per event it cost more than the event itself (a task group each time),
                    # and a write to a closed connection fails anyway.
                    if await request.is_disconnected():
                        return
                    yield ": keepalive\n\n"
                    continue
                # Whatever is already queued goes out in one write: thousands of units make thousands of
                # events a second, and a write (through every middleware) per event was the bulk of the cost.
                chunk: list[str] = []
                while next_event.done():
                    try:
                        event = next_event.result()
                    except StopAsyncIteration:
                        if chunk:
                            yield "".join(chunk)
                        return
                    if wanted_event(event):
                        chunk.append(event.to_sse())
                    next_event = asyncio.ensure_future(events_iter.__anext__())
                    if len(chunk) >= MAX_CHUNK_EVENTS:
                        break
                    await asyncio.sleep(0)  # lets the read run: done now if another event was queued
                if chunk:
                    yield "".join(chunk)
        finally:
            next_event.cancel()
            # The cancelled __anext__ must finish before the subscription can be closed: aclose() on a generator
            # that is still running raises (and was logged as an error on every client disconnect).
            await asyncio.gather(next_event, return_exceptions=True)
            await events_iter.aclose()

    return _EventStream(stream(), media_type="text/event-stream", release=lambda: streams.release(who.label),
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
