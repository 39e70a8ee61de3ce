"""Desired/reported configuration of a unit, published retained to `config/desired`."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Response

from fleet_service.api.deps import Ctx, Operator, Viewer
from fleet_service.api.params import check_json_document
from fleet_service.config_schema import ConfigInvalid, describe
from fleet_service.group_config import VersionConflict

router = APIRouter(tags=["config"])
VERSION_RE = re.compile(r"[0-9]{1,9}")  # ASCII digits, and a version the database's integer column holds


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: "3"` (or 3, W/"3"); `*` matches any version. Anything else is a 422."""
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip().strip('"')
    if not VERSION_RE.fullmatch(text):
        raise HTTPException(422, f"If-Match must be the desired version number, e.g. \"3\"; got {value!r}")
    return int(text)


def json_document(value: Any, what: str) -> Any:
    """The body as it came, or 422 when it is nested too deep or holds NaN/Infinity."""
    try:
        return check_json_document(value, what)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/api/config/schema")
def config_schema(_: Viewer) -> dict[str, Any]:
    """The known keys and their types; any other key is passed through unchecked."""
    return {"known": describe(), "unknown_keys": "allowed"}


@router.get("/api/devices/{device_id}/config")
async def get_config(device_id: str, ctx: Ctx, _: Viewer, response: Response) -> dict[str, Any]:
    view = await asyncio.to_thread(ctx.configs.view, device_id)
    if view is None:
        raise HTTPException(404, f"no unit with id {device_id!r}")
    response.headers["ETag"] = f'"{view["desired_version"]}"'
    return view


@router.put("/api/devices/{device_id}/config")
async def put_config(
    device_id: str,
    ctx: Ctx,
    _: Operator,
    response: Response,
    config: Annotated[Any, Body()],
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Set the unit's own config (merged over its tags' defaults); bumps desired_version and publishes it."""
    expected = parse_if_match(if_match)
    try:
        desired = await ctx.configs.put_device(device_id, json_document(config, "the config"), expected)
    except ConfigInvalid as exc:
        raise HTTPException(422, str(exc)) from None
    except LookupError:
        raise HTTPException(404, f"no unit with id {device_id!r}") from None
    except VersionConflict as exc:
        raise HTTPException(412, f"the desired config is at version {exc.current}, not {expected}") from None
    view = await asyncio.to_thread(ctx.configs.view, device_id)
    if view is None:  # revoked in between
        raise HTTPException(404, f"no unit with id {device_id!r}")
    response.headers["ETag"] = f'"{desired.version}"'
    return {**view, "desired": desired.config, "desired_version": desired.version}


__all__ = ["json_document", "parse_if_match", "router"]
