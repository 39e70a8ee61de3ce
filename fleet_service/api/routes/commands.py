"""Commands to units: create (202), list per unit, read, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from fleet_service.api.deps import Ctx, Operator, Viewer, load_device
from fleet_service.api.params import JsonObject, Offset
from fleet_service.api.schemas.commands import CommandDetail, CommandPublic
from fleet_service.api.schemas.common import Page
from fleet_service.auth.credentials import Identity
from fleet_service.commands.dispatch import MAX_TIMEOUT_S, MAX_TTL_S
from fleet_service.commands.models import Command, CommandEvent, command_public
from fleet_service.commands.state import STATES
from fleet_service.db.columns import iso
from fleet_service.errors import Invalid, NotFound
from protocol.ids import new_id, now_ms
from protocol.payloads import Command as CommandMessage
from protocol.payloads import encode

router = APIRouter(tags=["commands"])
# The brokers refuse a message over protocol.payloads.MAX_PAYLOAD_BYTES (256 KiB), after which a stored command
# would never arrive and be sent again on every reconnect: its message must fit well within that.
MAX_COMMAND_BYTES = 128 * 1024


def check_command_size(name: str, args: dict[str, Any]) -> None:
    """422 naming the limit when the command's MQTT message (`fleet/{id}/cmd`) would be over MAX_COMMAND_BYTES."""
    now = now_ms()
    message = CommandMessage(id=new_id(), name=name, args=args, ts=now, expires_at=now + MAX_TTL_S * 1000)
    size = len(encode(message))
    if size > MAX_COMMAND_BYTES:
        raise Invalid(
            f"the command would be a {size}-byte message to the unit; at most "
            f"{MAX_COMMAND_BYTES} bytes are allowed: make args smaller"
        )


class CommandRequest(BaseModel):
    name: str
    args: JsonObject = Field(default_factory=dict)
    ttl_s: int | None = Field(default=None, ge=1, le=MAX_TTL_S)
    timeout_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)


class UpdateRequest(BaseModel):
    ref: str = Field(min_length=1, max_length=200)
    ttl_s: int | None = Field(default=None, ge=1, le=MAX_TTL_S)
    timeout_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)


class SimpleRequest(BaseModel):
    ttl_s: int | None = Field(default=None, ge=1, le=MAX_TTL_S)
    timeout_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)


class RestartRequest(SimpleRequest):
    unit: str | None = Field(default=None, max_length=200, description="one configured unit; default: all of them")


async def _create(ctx, device_id: str, who: Identity, name: str, args: dict, ttl_s=None, timeout_s=None):
    check_command_size(name, args)
    # the unit is looked up in the transaction that stores the command: NotFound, or CommandError for bad input
    cmd = await ctx.dispatcher.create(device_id, name, args, ttl_s=ttl_s, timeout_s=timeout_s, created_by=who.label)
    return command_public(cmd)


@router.post("/api/devices/{device_id}/commands", status_code=202, response_model=CommandPublic)
async def create_command(device_id: str, body: CommandRequest, ctx: Ctx, who: Operator) -> dict[str, Any]:
    return await _create(ctx, device_id, who, body.name, body.args, body.ttl_s, body.timeout_s)


@router.post("/api/devices/{device_id}/restart", status_code=202, response_model=CommandPublic)
async def restart(device_id: str, ctx: Ctx, who: Operator, body: RestartRequest | None = None) -> dict[str, Any]:
    body = body or RestartRequest()
    args = {"unit": body.unit} if body.unit else {}
    return await _create(ctx, device_id, who, "restart", args, body.ttl_s, body.timeout_s)


@router.post("/api/devices/{device_id}/reboot", status_code=202, response_model=CommandPublic)
async def reboot(device_id: str, ctx: Ctx, who: Operator, body: SimpleRequest | None = None) -> dict[str, Any]:
    body = body or SimpleRequest()
    return await _create(ctx, device_id, who, "reboot", {}, body.ttl_s, body.timeout_s)


@router.post("/api/devices/{device_id}/update", status_code=202, response_model=CommandPublic)
async def update(device_id: str, body: UpdateRequest, ctx: Ctx, who: Operator) -> dict[str, Any]:
    return await _create(ctx, device_id, who, "update", {"ref": body.ref}, body.ttl_s, body.timeout_s)


@router.get("/api/devices/{device_id}/commands", response_model=Page[CommandPublic])
def list_commands(
    device_id: str,
    ctx: Ctx,
    _: Viewer,
    status: Annotated[str | None, Query(pattern=f"^({'|'.join(STATES)})$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    load_device(ctx, device_id)
    query = select(Command).where(Command.device_id == device_id)
    if status:
        query = query.where(Command.status == status)
    with Session(ctx.engine) as s:
        total = s.exec(select(func.count()).select_from(query.subquery())).one()
        rows = s.exec(
            query.order_by(col(Command.created_at).desc(), col(Command.id).desc()).offset(offset).limit(limit)
        ).all()
    return {"items": [command_public(c) for c in rows], "total": total, "limit": limit, "offset": offset}


@router.get("/api/commands/{command_id}", response_model=CommandDetail)
def get_command(command_id: str, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    with Session(ctx.engine) as s:
        cmd = s.get(Command, command_id)
        if cmd is None:
            raise NotFound(f"no command with id {command_id!r}")
        history = s.exec(
            select(CommandEvent).where(CommandEvent.command_id == command_id).order_by(col(CommandEvent.id))
        ).all()
    return {**command_public(cmd), "history": [{"status": e.status, "time": iso(e.ts)} for e in history]}


@router.post("/api/commands/{command_id}/cancel", response_model=CommandPublic)
async def cancel_command(command_id: str, ctx: Ctx, _: Operator) -> dict[str, Any]:
    cmd = await ctx.dispatcher.cancel(command_id)
    return command_public(cmd)
