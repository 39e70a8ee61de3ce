"""The tags in use across the fleet, with how many units carry each: what the dashboard suggests while an
operator types a tag (the unit list's page only knows the tags of the units it shows)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from fleet_service.api.deps import Ctx, Viewer
from fleet_service.api.schemas.devices import TagList
from fleet_service.devices.tags import tag_counts

router = APIRouter(prefix="/api/tags", tags=["devices"])


@router.get("", response_model=TagList)
async def list_tags(
    ctx: Ctx,
    _: Viewer,
    prefix: Annotated[str, Query(max_length=64, description="tags starting with this, ignoring case")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    return {"items": await asyncio.to_thread(tag_counts, ctx.engine, prefix, limit)}
