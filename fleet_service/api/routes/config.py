"""Desired/reported configuration of a unit, published retained to `config/desired`."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_service.api.deps import Ctx, Operator, Viewer
from fleet_service.api.params import check_json_document
from fleet_service.api.schemas.config import ConfigSchema, DeviceConfigView
from fleet_service.auth.credentials import Identity, role_allows
from fleet_service.errors import Forbidden, Invalid, NotFound
from fleet_service.unit_config.models import DeviceConfig
from fleet_service.unit_config.schema import admin_keys_changed, describe

router = APIRouter(tags=["config"])
VERSION_RE = re.compile(r"[0-9]{1,9}")  # ASCII digits, and a version the database's integer column holds


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: "3"` (or 3, W/"3"); `*` matches any version. Anything else is a 422."""
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip().strip('"')
    if not VERSION_RE.fullmatch(text):
        raise Invalid(f'If-Match must be the desired version number, e.g. "3"; got {value!r}')
    return int(text)


def json_document(value: Any, what: str) -> Any:
    """The body as it came, or 422 when it is nested too deep or holds NaN/Infinity."""
    try:
        return check_json_document(value, what)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


@router.get("/api/config/schema", response_model=ConfigSchema, response_model_exclude_unset=True)
def config_schema(_: Viewer) -> dict[str, Any]:
    """The known keys and their types; any other key is passed through unchecked."""
    return {"known": describe(), "unknown_keys": "allowed"}


@router.get("/api/devices/{device_id}/config", response_model=DeviceConfigView)
async def get_config(device_id: str, ctx: Ctx, _: Viewer, response: Response) -> dict[str, Any]:
    view = await asyncio.to_thread(ctx.configs.view, device_id)
    if view is None:
        raise NotFound(f"no unit with id {device_id!r}")
    response.headers["ETag"] = f'"{view["desired_version"]}"'
    return view


@router.put("/api/devices/{device_id}/config", response_model=DeviceConfigView)
async def put_config(
    device_id: str,
    ctx: Ctx,
    who: Operator,
    response: Response,
    config: Annotated[Any, Body()],
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Set the unit's own config (merged over its tags' defaults); bumps desired_version and publishes it."""
    expected = parse_if_match(if_match)
    document = json_document(config, "the config")
    stored = await asyncio.to_thread(_own_config, ctx.engine, device_id)
    check_admin_keys(who, stored, document if isinstance(document, dict) else None, f"unit {device_id}")
    desired = await ctx.configs.put_device(device_id, document, expected)
    view = await asyncio.to_thread(ctx.configs.view, device_id)
    if view is None:  # revoked in between
        raise NotFound(f"no unit with id {device_id!r}")
    response.headers["ETag"] = f'"{desired.version}"'
    return {**view, "desired": desired.config, "desired_version": desired.version}


def check_admin_keys(who: Identity, before: dict[str, Any] | None, after: dict[str, Any] | None, what: str) -> None:
    """Who may open a shell on a unit is an admin's decision: 403 for anyone else who would change it."""
    changed = admin_keys_changed(before, after)
    if changed and not role_allows(who.role, "admin"):
        raise Forbidden(f"only an admin may set or change {', '.join(changed)} (in the config of {what})")


def _own_config(engine: Engine, device_id: str) -> dict[str, Any] | None:
    with Session(engine) as s:
        row = s.get(DeviceConfig, device_id)
    return row.config if row is not None else None


__all__ = ["check_admin_keys", "json_document", "parse_if_match", "router"]
