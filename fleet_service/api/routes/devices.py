"""Units: enroll, list, read, edit, revoke, rotate their secret, read their status."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import case, func
from sqlmodel import Session, col, select

from fleet_service.api.deps import Admin, Ctx, DeviceIdField, Operator, Viewer, load_device
from fleet_service.api.params import Offset
from fleet_service.api.schemas.devices import DeviceEnrolled, DevicePage, DevicePublic, DeviceSecret, DeviceStatus
from fleet_service.devices.enrollment import enroll, revoke, rotate_secret
from fleet_service.devices.listing import FAILING, filter_conditions
from fleet_service.devices.models import Device, device_public, device_status
from fleet_service.devices.tags import set_tags
from fleet_service.errors import NotFound
from protocol.tags import check_tags

router = APIRouter(prefix="/api/devices", tags=["devices"])
# What a list item shows (device_public): the full row also holds the desired and reported config documents.
LIST_COLUMNS = tuple(
    col(c)
    for c in (
        Device.id,
        Device.name,
        Device.tags,
        Device.created_at,
        Device.online,
        Device.last_seen,
        Device.online_changed_at,
        Device.offline_reason,
        Device.software_version,
        Device.agent_version,
        Device.boot_id,
        Device.hostname,
        Device.ips,
        Device.uptime_s,
        Device.last_metrics,
        Device.logs_dropped,
        Device.reported_version,
        Device.desired_version,
        Device.config_status,
        Device.failing,
        Device.ingest_throttled,
    )
)
SORTS = {
    "id": Device.id,
    "name": Device.name,
    "last_seen": Device.last_seen,
    "status": Device.online,
    "software_version": Device.software_version,
}


class Enroll(BaseModel):
    id: DeviceIdField
    name: str | None = Field(default=None, max_length=200)
    tags: list[str] = Field(default_factory=list)

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, tags: list[str]) -> list[str]:
        return check_tags(tags)


class DevicePatch(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    tags: list[str] | None = None

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, tags: list[str] | None) -> list[str] | None:
        return None if tags is None else check_tags(tags)


@router.get("", response_model=DevicePage)
def list_devices(
    ctx: Ctx,
    _: Viewer,
    status: Annotated[str | None, Query(pattern="^(online|offline|failing)$")] = None,
    tag: str | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    sort: Annotated[str, Query(pattern="^-?(id|name|last_seen|status|software_version)$")] = "id",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    conditions = filter_conditions(status, tag, q)
    column = SORTS[sort.lstrip("-")]
    order = col(column).desc() if sort.startswith("-") else col(column).asc()
    # The fleet-wide summary in one pass over the table; the filtered total only when a filter is set.
    summary = select(
        func.count(),
        func.count(case((col(Device.online) == True, 1))),  # noqa: E712
        func.count(case((FAILING, 1))),
    )
    with ctx.engine.connect() as conn:  # plain rows: no ORM objects for a read-only page
        units, online, failing = conn.execute(summary).one()
        total = (
            conn.execute(select(func.count()).select_from(Device).where(*conditions)).scalar_one()
            if conditions
            else units
        )
        rows = conn.execute(
            select(*LIST_COLUMNS).where(*conditions).order_by(order, Device.id).offset(offset).limit(limit)
        ).all()
    # a row of LIST_COLUMNS has the attributes device_public reads
    return {
        "items": [_light(device_public(cast(Device, d)), d.failing) for d in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
        "summary": {"units": units, "online": online, "offline": units - online, "failing": failing},
    }


def _light(item: dict[str, Any], failing: bool) -> dict[str, Any]:
    """A list item carries the latest numbers, whether the unit reports a failure and which services failed;
    the whole `services` and `extra` are on the unit's own status."""
    metrics = item.get("metrics")
    services = metrics.get("services") if isinstance(metrics, dict) else None
    if isinstance(metrics, dict):
        item["metrics"] = {k: v for k, v in metrics.items() if k not in ("services", "extra")}
    item["failing"] = bool(failing) and bool(item["online"])
    item["failed_services"] = (
        sorted(n for n, s in services.items() if s == "failed") if isinstance(services, dict) else []
    )
    return item


@router.post("", status_code=201, response_model=DeviceEnrolled)
async def create_device(body: Enroll, request: Request, ctx: Ctx, _: Admin) -> dict[str, Any]:
    request.state.audit_target = body.id
    device, secret = await asyncio.to_thread(enroll, ctx.engine, body.id, body.name or "", body.tags, ctx.plugin_auth)
    await ctx.on_credentials_changed(device.id)
    ctx.bus.publish("device", {"device_id": device.id, "action": "enrolled"}, device.id)
    return {**device_public(device), "secret": secret}


@router.get("/{device_id}", response_model=DevicePublic)
def get_device(device_id: str, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return device_public(load_device(ctx, device_id))


@router.get("/{device_id}/status", response_model=DeviceStatus)
def get_status(device_id: str, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return device_status(load_device(ctx, device_id))


@router.patch("/{device_id}", response_model=DevicePublic)
def patch_device(device_id: str, body: DevicePatch, ctx: Ctx, _: Operator) -> dict[str, Any]:
    """Rename or retag a unit (operator: tags drive groups and rollouts); credentials stay admin-only."""
    with Session(ctx.engine, expire_on_commit=False) as s:
        device = s.get(Device, device_id)
        if device is None:
            raise NotFound(f"no unit with id {device_id!r}")
        if body.name is not None:
            device.name = body.name
        if body.tags is not None:
            set_tags(s, device, body.tags)
        s.add(device)
        s.commit()
    ctx.bus.publish("device", {"device_id": device_id, "action": "updated"}, device_id)
    return device_public(device)


@router.delete("/{device_id}", status_code=204)
async def delete_device(device_id: str, ctx: Ctx, _: Admin) -> Response:
    if not await asyncio.to_thread(revoke, ctx.engine, device_id, ctx.plugin_auth):
        raise NotFound(f"no unit with id {device_id!r}")
    await ctx.on_credentials_changed(device_id, revoked=True)
    ctx.bus.publish("device", {"device_id": device_id, "action": "revoked"}, device_id)
    return Response(status_code=204)


@router.post("/{device_id}/rotate-secret", response_model=DeviceSecret)
async def rotate(device_id: str, ctx: Ctx, _: Admin) -> dict[str, Any]:
    secret = await asyncio.to_thread(rotate_secret, ctx.engine, device_id, ctx.plugin_auth)
    if secret is None:
        raise NotFound(f"no unit with id {device_id!r}")
    await ctx.on_credentials_changed(device_id, revoked=True)
    return {"id": device_id, "secret": secret}
