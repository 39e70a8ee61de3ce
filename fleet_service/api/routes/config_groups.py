"""Fleet-wide config defaults per tag: change a setting for every unit of a tag at once."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Response

from fleet_service.api.deps import Ctx, Operator, Viewer
from fleet_service.api.routes.config import json_document, parse_if_match
from fleet_service.api.routes.devices import TAG_RE
from fleet_service.config_schema import ConfigInvalid
from fleet_service.group_config import VersionConflict

router = APIRouter(prefix="/api/config/groups", tags=["config"])


def _check_tag(tag: str) -> str:
    if not TAG_RE.fullmatch(tag):
        raise HTTPException(422, f"invalid tag {tag!r}: letters, digits and _.:=- only, at most 64 characters")
    return tag


@router.get("")
async def list_groups(ctx: Ctx, _: Viewer) -> dict[str, Any]:
    items = await asyncio.to_thread(ctx.configs.groups)
    return {"items": items, "total": len(items)}


@router.get("/{tag}")
async def get_group(tag: str, ctx: Ctx, _: Viewer, response: Response) -> dict[str, Any]:
    group = await asyncio.to_thread(ctx.configs.group, _check_tag(tag))
    if group is None:
        raise HTTPException(404, f"no config defaults for tag {tag!r}")
    response.headers["ETag"] = f'"{group["version"]}"'
    return group


@router.put("/{tag}")
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
    try:
        group, changed = await ctx.configs.put_group(_check_tag(tag), json_document(config, "the group config"),
                                                     priority=priority, if_match=expected, updated_by=who.label)
    except ConfigInvalid as exc:
        raise HTTPException(422, str(exc)) from None
    except VersionConflict as exc:
        raise HTTPException(412, f"the group config is at version {exc.current}, not {expected}") from None
    response.headers["ETag"] = f'"{group["version"]}"'
    return {**group, "changed_units": changed}


@router.delete("/{tag}")
async def delete_group(tag: str, ctx: Ctx, _: Operator) -> dict[str, Any]:
    changed = await ctx.configs.delete_group(_check_tag(tag))
    if changed is None:
        raise HTTPException(404, f"no config defaults for tag {tag!r}")
    return {"tag": tag, "deleted": True, "changed_units": changed}
