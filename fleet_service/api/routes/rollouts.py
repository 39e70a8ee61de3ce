"""Rollouts: a command to every unit of a tag (or a list of units), batch by batch, with an abort threshold."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import String, cast
from sqlmodel import Session, col, select

from fleet_service.api.deps import Ctx, Operator, Viewer
from fleet_service.api.params import JsonObject, Offset
from fleet_service.api.routes.commands import check_command_size
from fleet_service.api.routes.devices import TAG_RE
from fleet_service.commands import MAX_TIMEOUT_S, MAX_TTL_S, CommandError, check_limits, validate
from fleet_service.models import Device
from fleet_service.rollouts import ACTIVE, DEFAULT_TTL_S, Plan, RolloutConflict, devices_in_order

router = APIRouter(prefix="/api/rollouts", tags=["rollouts"])
STATES = (*ACTIVE, "completed", "aborted", "canceled")
MAX_UNITS = 20_000


class RolloutRequest(BaseModel):
    name: str = Field(default="", max_length=200)
    command: str = Field(description="restart, update, reboot, config_update or ping")
    args: JsonObject = Field(default_factory=dict)
    tag: str | None = Field(default=None, description="every unit carrying this tag ...")
    device_ids: list[str] | None = Field(default=None, max_length=MAX_UNITS, description="... or these units, in order")
    batch_size: int | None = Field(default=None, ge=1, le=MAX_UNITS)
    batch_percent: float | None = Field(default=None, gt=0, le=100)
    pause_s: float = Field(default=0, ge=0, le=7 * 24 * 3600, description="wait between batches")
    abort_threshold: float = Field(default=0.1, ge=0, le=1,
                                   description="abort when failed / finished units exceeds this fraction")
    ttl_s: int = Field(default=DEFAULT_TTL_S, ge=1, le=MAX_TTL_S, description="a unit must take its command within")
    timeout_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S, description="and report a result within")

    @model_validator(mode="after")
    def _one_of(self) -> RolloutRequest:
        if (self.tag is None) == (self.device_ids is None):
            raise ValueError("give exactly one of tag or device_ids")
        if self.batch_size is not None and self.batch_percent is not None:
            raise ValueError("give batch_size or batch_percent, not both")
        if self.tag is not None and not TAG_RE.fullmatch(self.tag):
            raise ValueError(f"invalid tag {self.tag!r}")
        return self


def _targets(ctx, body: RolloutRequest) -> list[str]:
    with Session(ctx.engine) as s:
        if body.tag is not None:
            rows = s.exec(select(Device.id, Device.tags).where(cast(Device.tags, String).like(f'%"{body.tag}"%'))
                          .order_by(Device.id)).all()
            ids = [device_id for device_id, tags in rows if body.tag in (tags or [])]
            if not ids:
                raise HTTPException(422, f"no unit carries the tag {body.tag!r}")
            return ids
        ids = devices_in_order(body.device_ids or [])
        if not ids:
            raise HTTPException(422, "device_ids is empty")
        known = set()
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            known |= set(s.exec(select(Device.id).where(col(Device.id).in_(chunk))).all())
        unknown = [d for d in ids if d not in known]
        if unknown:
            shown = ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise HTTPException(422, f"{len(unknown)} unknown unit(s): {shown}")
        return ids


@router.post("", status_code=201)
async def create_rollout(body: RolloutRequest, ctx: Ctx, who: Operator) -> dict[str, Any]:
    try:
        args = validate(body.command, body.args)
        check_limits(body.ttl_s, body.timeout_s)
    except CommandError as exc:
        raise HTTPException(422, str(exc)) from None
    check_command_size(body.command, args)
    ids = await asyncio.to_thread(_targets, ctx, body)
    size = body.batch_size or max(1, math.ceil(len(ids) * (body.batch_percent or 10) / 100))
    plan = Plan(command=body.command, args=args, device_ids=ids,
                target={"tag": body.tag} if body.tag is not None else {"device_ids": ids},
                batch_size=size, pause_s=body.pause_s, abort_threshold=body.abort_threshold, ttl_s=body.ttl_s,
                timeout_s=body.timeout_s, name=body.name, created_by=who.label)
    return await ctx.rollouts.create(plan)


@router.get("")
async def list_rollouts(
    ctx: Ctx,
    _: Viewer,
    state: Annotated[str | None, Query(pattern=f"^({'|'.join(STATES)})$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    return await asyncio.to_thread(ctx.rollouts.page, state, limit, offset)


@router.get("/{rollout_id}")
async def get_rollout(
    rollout_id: str,
    ctx: Ctx,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=MAX_UNITS, description="units shown")] = 1000,
    offset: Offset = 0,
) -> dict[str, Any]:
    view = await asyncio.to_thread(ctx.rollouts.view, rollout_id, True, limit, offset)
    if view is None:
        raise HTTPException(404, f"no rollout with id {rollout_id!r}")
    return view


async def _operate(ctx, rollout_id: str, op: str, who: str = "") -> dict[str, Any]:
    try:
        if op == "cancel":
            return await ctx.rollouts.cancel(rollout_id, who)
        return await getattr(ctx.rollouts, op)(rollout_id)
    except LookupError:
        raise HTTPException(404, f"no rollout with id {rollout_id!r}") from None
    except RolloutConflict as exc:
        raise HTTPException(409, str(exc)) from None


@router.post("/{rollout_id}/pause")
async def pause_rollout(rollout_id: str, ctx: Ctx, _: Operator) -> dict[str, Any]:
    """No new batch starts; commands already sent run to their end."""
    return await _operate(ctx, rollout_id, "pause")


@router.post("/{rollout_id}/resume")
async def resume_rollout(rollout_id: str, ctx: Ctx, _: Operator) -> dict[str, Any]:
    return await _operate(ctx, rollout_id, "resume")


@router.post("/{rollout_id}/cancel")
async def cancel_rollout(rollout_id: str, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """Units not sent anything yet, and commands still waiting for their unit, are canceled."""
    return await _operate(ctx, rollout_id, "cancel", who.label)
