"""Notification channels: viewers read them (never their secrets) and their delivery log; admins create, edit,
delete and test them. The outbox (`/api/notifications`) is for viewers too."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from fleet_service.api.deps import Admin, Ctx, Viewer
from fleet_service.api.params import Offset
from fleet_service.api.schemas.common import Items, Page
from fleet_service.api.schemas.notifications import (
    ChannelPublic,
    ChannelTestResult,
    ChannelWithSecret,
    DeliveryAttempt,
    NotificationPublic,
)
from fleet_service.notify.channels import (
    ChannelSpec,
    ChannelUpdate,
    channel_public,
    create_channel,
    delete_channel,
    get_channel,
    list_channels,
    update_channel,
)
from fleet_service.notify.listing import deliveries, notifications
from fleet_service.notify.notifier import send_test

router = APIRouter(tags=["notifications"])
PREFIX = "/api/notification-channels"
Limit = Annotated[int, Query(ge=1, le=500)]


@router.get(PREFIX, response_model=Items[ChannelPublic])
async def list_all(ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return {"items": [channel_public(c) for c in await asyncio.to_thread(list_channels, ctx.engine)]}


@router.post(PREFIX, status_code=201, response_model=ChannelWithSecret)
async def create(body: ChannelSpec, request: Request, ctx: Ctx, who: Admin) -> dict[str, Any]:
    """A webhook's signing key is in this answer (`secret`) and never again."""
    channel, key = await asyncio.to_thread(create_channel, ctx.engine, body, who.label)
    request.state.audit_target = channel.id
    return {**channel_public(channel), "secret": key}


@router.get(PREFIX + "/{channel_id}", response_model=ChannelPublic)
async def get_one(channel_id: str, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return channel_public(await asyncio.to_thread(get_channel, ctx.engine, channel_id))


@router.put(PREFIX + "/{channel_id}", response_model=ChannelWithSecret)
async def update(channel_id: str, body: ChannelUpdate, ctx: Ctx, who: Admin) -> dict[str, Any]:
    """Replace the channel whole; stored secrets stay unless given again. `rotate_secret: true` makes a new
    webhook signing key, shown once in this answer."""
    channel, key = await asyncio.to_thread(update_channel, ctx.engine, channel_id, body, who.label)
    return {**channel_public(channel), "secret": key}


@router.delete(PREFIX + "/{channel_id}", status_code=204)
async def delete(channel_id: str, ctx: Ctx, _: Admin) -> Response:
    """Delete the channel with its outbox rows and delivery log."""
    await asyncio.to_thread(delete_channel, ctx.engine, channel_id)
    return Response(status_code=204)


@router.post(PREFIX + "/{channel_id}/test", response_model=ChannelTestResult)
async def test_send(channel_id: str, ctx: Ctx, _: Admin) -> dict[str, Any]:
    """Send a test message now (marked `test`), whether the channel is enabled or not; logged as an attempt."""
    s = ctx.settings
    return await send_test(ctx.engine, channel_id, s.notify_send_timeout_s, s.public_url)


@router.get(PREFIX + "/{channel_id}/deliveries", response_model=Page[DeliveryAttempt])
async def channel_deliveries(
    channel_id: str, ctx: Ctx, _: Viewer, limit: Limit = 50, offset: Offset = 0
) -> dict[str, Any]:
    """Every attempt to reach this channel, newest first."""
    return await asyncio.to_thread(deliveries, ctx.engine, channel_id, limit, offset)


@router.get("/api/notifications", response_model=Page[NotificationPublic])
async def list_notifications(
    ctx: Ctx,
    _: Viewer,
    state: Annotated[Literal["grouping", "pending", "delivered", "failed", "suppressed"] | None, Query()] = None,
    channel: Annotated[str | None, Query(max_length=32, description="a channel's id")] = None,
    alert: Annotated[int | None, Query(ge=1, le=2**62, description="rows carrying this alert")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """The outbox, newest first, each row with its alerts and its attempts."""
    return await asyncio.to_thread(notifications, ctx.engine, state, channel, alert, limit, offset)
