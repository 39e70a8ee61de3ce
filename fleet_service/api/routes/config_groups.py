"""Fleet-wide config defaults per tag: change a setting for every unit of a tag at once."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response

from fleet_service.api.deps import Ctx, Operator, Viewer
from fleet_service.api.routes.config import check_admin_keys, json_document, parse_if_match
from fleet_service.api.schemas.config import ConfigGroupDeleted, ConfigGroupList, ConfigGroupPublic, ConfigGroupWritten
from fleet_service.errors import Invalid, NotFound
from protocol.tags import TAG_RULE, is_tag

router = APIRouter(prefix="/api/config/groups", tags=["config"])


def _check_tag(tag: str) -> str:
    if not is_tag(tag):
        raise Invalid(f"invalid tag {tag!r}: {TAG_RULE}")
    return tag


@router.get("", response_model=ConfigGroupList)
async def list_groups(ctx: Ctx, _: Viewer) -> dict[str, Any]:
    items = await asyncio.to_thread(ctx.configs.groups)
    return {"items": items, "total": len(items)}


@router.get("/{tag}", response_model=ConfigGroupPublic)
async def get_group(tag: str, ctx: Ctx, _: Viewer, response: Response) -> dict[str, Any]:
    group = await asyncio.to_thread(ctx.configs.group, _check_tag(tag))
    if group is None:
        raise NotFound(f"no config defaults for tag {tag!r}")
    response.headers["ETag"] = f'"{group["version"]}"'
    return group


@router.put("/{tag}", response_model=ConfigGroupWritten)
async def put_group(
    tag: str,
    ctx: Ctx,
    who: Operator,
    response: Response,
    config: Annotated[Any, Body()],
    priority: Annotated[int | None, Query(ge=-1000, le=1000, description="higher wins; default 0")] = None,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Set the defaults of every unit tagged `tag`; each affected unit gets its new effective config."""
    expected = parse_if_match(if_match)
    document = json_document(config, "the group config")
    stored = await asyncio.to_thread(ctx.configs.group, _check_tag(tag))
    check_admin_keys(
        who, stored["config"] if stored else None, document if isinstance(document, dict) else None, f"tag {tag}"
    )
    group, changed = await ctx.configs.put_group(
        tag,
        document,
        priority=priority,
        if_match=expected,
        updated_by=who.label,
    )
    response.headers["ETag"] = f'"{group["version"]}"'
    return {**group, "changed_units": changed}


@router.delete("/{tag}", response_model=ConfigGroupDeleted)
async def delete_group(tag: str, ctx: Ctx, who: Operator) -> dict[str, Any]:
    stored = await asyncio.to_thread(ctx.configs.group, _check_tag(tag))
    check_admin_keys(who, stored["config"] if stored else None, None, f"tag {tag}")
    changed = await ctx.configs.delete_group(tag)
    if changed is None:
        raise NotFound(f"no config defaults for tag {tag!r}")
    return {"tag": tag, "deleted": True, "changed_units": changed}
