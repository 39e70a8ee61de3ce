"""Server-Sent Events: live presence, heartbeats, metrics, logs, command and config status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from fleet_service.api.deps import Ctx, Viewer

router = APIRouter(tags=["events"])
KEEPALIVE_S = 15.0


@router.get("/api/events")
async def events(
    request: Request,
    ctx: Ctx,
    _: Viewer,
    device_id: Annotated[str | None, Query(description="only this unit's events")] = None,
    types: Annotated[str | None, Query(description="comma-separated event types")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    wanted = {t.strip() for t in types.split(",")} if types else None
    try:
        resume = int(last_event_id) if last_event_id else None
    except ValueError:
        resume = None

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n: connected\n\n"
        events_iter = ctx.bus.subscribe(resume).__aiter__()
        next_event = asyncio.ensure_future(events_iter.__anext__())
        try:
            while True:
                done, _ = await asyncio.wait({next_event}, timeout=KEEPALIVE_S)
                if await request.is_disconnected():
                    return
                if not done:
                    yield ": keepalive\n\n"
                    continue
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    return
                next_event = asyncio.ensure_future(events_iter.__anext__())
                if device_id and event.device_id != device_id:
                    continue
                if wanted and event.type not in wanted:
                    continue
                yield event.to_sse()
        finally:
            next_event.cancel()
            # The cancelled __anext__ must finish before the subscription can be closed: aclose() on a generator
            # that is still running raises (and was logged as an error on every client disconnect).
            await asyncio.gather(next_event, return_exceptions=True)
            await events_iter.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
