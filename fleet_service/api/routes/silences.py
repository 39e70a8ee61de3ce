"""Silences: viewers read them, operators create and expire them (DELETE ends one now; the record stays)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from fleet_service.alerts.silences import (
    SilenceSpec,
    create_silence,
    expire_silence,
    get_silence,
    list_silences,
    silence_public,
)
from fleet_service.api.deps import Ctx, Operator, Viewer
from fleet_service.api.schemas.alerts import SilencePublic
from fleet_service.api.schemas.common import Items

router = APIRouter(prefix="/api/silences", tags=["alerts"])


@router.get("", response_model=Items[SilencePublic])
async def list_all(
    ctx: Ctx, _: Viewer, active: Annotated[bool | None, Query(description="only active (or inactive) ones")] = None
) -> dict[str, Any]:
    return {"items": [silence_public(x) for x in await asyncio.to_thread(list_silences, ctx.engine, active)]}


@router.post("", status_code=201, response_model=SilencePublic)
async def create(body: SilenceSpec, ctx: Ctx, who: Operator) -> dict[str, Any]:
    return silence_public(await asyncio.to_thread(create_silence, ctx.engine, body, who.label))


@router.get("/{silence_id}", response_model=SilencePublic)
async def get_one(silence_id: str, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return silence_public(await asyncio.to_thread(get_silence, ctx.engine, silence_id))


@router.delete("/{silence_id}", response_model=SilencePublic)
async def expire(silence_id: str, ctx: Ctx, _: Operator) -> dict[str, Any]:
    """End the silence now."""
    return silence_public(await asyncio.to_thread(expire_silence, ctx.engine, silence_id))
