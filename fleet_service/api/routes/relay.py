"""`WS /api/devices/{id}/relay`: a controller's signalling channel to one unit; relay health."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlmodel import Session

from fleet_service.api.deps import Ctx, Viewer, authenticate
from fleet_service.api.schemas.system import RelayHealth
from fleet_service.auth.credentials import role_allows
from fleet_service.auth.web_sessions import same_origin
from fleet_service.broker_link.mqtt import BrokerUnavailable
from fleet_service.devices.models import Device
from fleet_service.refusals import (
    CLOSE_BROKER_DOWN,
    CLOSE_FORBIDDEN,
    CLOSE_LIMIT,
    CLOSE_TOO_LARGE,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNIT_OFFLINE,
    CLOSE_UNKNOWN_UNIT,
)
from fleet_service.signalling.relay import Controller
from protocol.payloads import MAX_RELAY_BYTES

router = APIRouter(tags=["relay"])
log = logging.getLogger(__name__)


@router.websocket("/api/devices/{device_id}/relay")
async def relay(ws: WebSocket, device_id: str) -> None:
    ctx = ws.app.state.ctx
    await ws.accept()
    identity = await authenticate(ws, ctx)
    if identity is None:
        await ws.close(CLOSE_UNAUTHENTICATED, "missing or invalid credentials")
        return
    if not role_allows(identity.role, "operator"):
        await ws.close(CLOSE_FORBIDDEN, "the relay needs the operator role")
        return
    if "authorization" not in ws.headers and not same_origin(ws):
        await ws.close(CLOSE_FORBIDDEN, "cross-origin relay connection refused")
        return
    with Session(ctx.engine) as s:
        device = s.get(Device, device_id)
    if device is None:
        await ws.close(CLOSE_UNKNOWN_UNIT, f"no unit with id {device_id!r}")
        return
    if not device.online:
        await ws.close(CLOSE_UNIT_OFFLINE, f"unit {device_id} is offline")
        return
    sockets = ws.app.state.relay_sockets
    if not sockets.acquire(identity.label):
        await ws.close(CLOSE_LIMIT, f"at most {sockets.limit} relay connections at a time per credential")
        return
    controller = Controller(device_id, identity.label)
    ctx.relay.attach(controller)
    sender = asyncio.create_task(_pump(ws, controller))
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data: Any = message.get("text") if message.get("text") is not None else message.get("bytes")
            if data is None:
                continue
            if len(data) > MAX_RELAY_BYTES:
                await ws.close(CLOSE_TOO_LARGE, f"message over {MAX_RELAY_BYTES} bytes")
                return
            if not controller.allow():
                await ws.close(CLOSE_LIMIT, "too many messages; slow down")
                return
            try:
                await ctx.relay.down(controller, data)
            except BrokerUnavailable:
                await ws.close(CLOSE_BROKER_DOWN, "the broker is unavailable")
                return
    except WebSocketDisconnect:
        return
    finally:
        sender.cancel()
        ctx.relay.detach(controller)
        sockets.release(identity.label)


async def _pump(ws: WebSocket, controller: Controller) -> None:
    try:
        while True:
            await ws.send_text(await controller.queue.get())
    except (WebSocketDisconnect, RuntimeError):
        return


@router.get("/api/relay/health", response_model=RelayHealth)
def relay_health(ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return {
        "status": "ok" if ctx.link.connected.is_set() else "degraded",
        "units": ctx.relay.unit_count,
        "controllers": ctx.relay.controller_count,
    }
