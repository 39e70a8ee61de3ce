"""Rollouts: a command to every unit of a tag (or a list of units, or the units a unit-list filter matches), batch by
batch, with an abort threshold."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session, col, select

from fleet_service.api.deps import Ctx, Operator, Viewer
from fleet_service.api.params import JsonObject, Offset
from fleet_service.api.routes.commands import check_command_size
from fleet_service.api.schemas.common import Page
from fleet_service.api.schemas.rollouts import RolloutDetail, RolloutPublic
from fleet_service.commands.dispatch import MAX_TIMEOUT_S, MAX_TTL_S, check_limits, validate
from fleet_service.devices.listing import MAX_Q, Status, matching_ids
from fleet_service.devices.models import Device
from fleet_service.devices.tags import units_with_tag
from fleet_service.errors import Invalid, NotFound
from fleet_service.rollouts.plan import DEFAULT_TTL_S, Plan, devices_in_order
from fleet_service.rollouts.progress import ACTIVE
from protocol.tags import is_tag

router = APIRouter(prefix="/api/rollouts", tags=["rollouts"])
STATES = (*ACTIVE, "completed", "aborted", "canceled")
MAX_UNITS = 20_000


class UnitFilter(BaseModel):
    """The unit list's filter (GET /api/devices' status, tag and q, with the same meaning)."""

    model_config = ConfigDict(extra="forbid")
    status: Status | None = None
    tag: str | None = None
    q: str | None = Field(default=None, max_length=MAX_Q)

    @model_validator(mode="after")
    def _valid_tag(self) -> UnitFilter:
        if self.tag and not is_tag(self.tag):
            raise ValueError(f"invalid tag {self.tag!r}")
        return self

    def public(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v}


class RolloutRequest(BaseModel):
    name: str = Field(default="", max_length=200)
    command: str = Field(description="restart, update, reboot, config_update or ping")
    args: JsonObject = Field(default_factory=dict)
    tag: str | None = Field(default=None, description="every unit carrying this tag ...")
    device_ids: list[str] | None = Field(default=None, max_length=MAX_UNITS, description="... or these units, in order")
    filter: UnitFilter | None = Field(
        default=None, description="... or the units this unit-list filter matches now, in id order"
    )
    batch_size: int | None = Field(default=None, ge=1, le=MAX_UNITS)
    batch_percent: float | None = Field(default=None, gt=0, le=100)
    pause_s: float = Field(default=0, ge=0, le=7 * 24 * 3600, description="wait between batches")
    abort_threshold: float = Field(
        default=0.1, ge=0, le=1, description="abort when failed / finished units exceeds this fraction"
    )
    ttl_s: int = Field(default=DEFAULT_TTL_S, ge=1, le=MAX_TTL_S, description="a unit must take its command within")
    timeout_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S, description="and report a result within")

    @model_validator(mode="after")
    def _one_of(self) -> RolloutRequest:
        if sum(t is not None for t in (self.tag, self.device_ids, self.filter)) != 1:
            raise ValueError("give exactly one of tag, device_ids or filter")
        if self.batch_size is not None and self.batch_percent is not None:
            raise ValueError("give batch_size or batch_percent, not both")
        if self.tag is not None and not is_tag(self.tag):
            raise ValueError(f"invalid tag {self.tag!r}")
        return self


def _targets(ctx, body: RolloutRequest) -> list[str]:
    with Session(ctx.engine) as s:
        if body.tag is not None:
            ids = list(s.exec(units_with_tag(body.tag)).all())
            if not ids:
                raise Invalid(f"no unit carries the tag {body.tag!r}")
            return ids
        if body.filter is not None:
            f = body.filter
            ids = matching_ids(s, f.status, f.tag, f.q, MAX_UNITS + 1)
            if not ids:
                raise Invalid(f"no unit matches the filter {f.public()}")
            if len(ids) > MAX_UNITS:
                raise Invalid(f"the filter matches more than {MAX_UNITS} units")
            return ids
        ids = devices_in_order(body.device_ids or [])
        if not ids:
            raise Invalid("device_ids is empty")
        known = set()
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            known |= set(s.exec(select(Device.id).where(col(Device.id).in_(chunk))).all())
        unknown = [d for d in ids if d not in known]
        if unknown:
            shown = ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise Invalid(f"{len(unknown)} unknown unit(s): {shown}")
        return ids


@router.post("", status_code=201, response_model=RolloutPublic)
async def create_rollout(body: RolloutRequest, ctx: Ctx, who: Operator) -> dict[str, Any]:
    args = validate(body.command, body.args)
    check_limits(body.ttl_s, body.timeout_s)
    check_command_size(body.command, args)
    ids = await asyncio.to_thread(_targets, ctx, body)
    size = body.batch_size or max(1, math.ceil(len(ids) * (body.batch_percent or 10) / 100))
    plan = Plan(
        command=body.command,
        args=args,
        device_ids=ids,
        target=_target(body, ids),
        batch_size=size,
        pause_s=body.pause_s,
        abort_threshold=body.abort_threshold,
        ttl_s=body.ttl_s,
        timeout_s=body.timeout_s,
        name=body.name,
        created_by=who.label,
    )
    return await ctx.rollouts.create(plan)


def _target(body: RolloutRequest, ids: list[str]) -> dict[str, Any]:
    """What the rollout was aimed at, as asked (its units are stored apart)."""
    if body.tag is not None:
        return {"tag": body.tag}
    if body.filter is not None:
        return {"filter": body.filter.public()}
    return {"device_ids": ids}


@router.get("", response_model=Page[RolloutPublic])
async def list_rollouts(
    ctx: Ctx,
    _: Viewer,
    state: Annotated[str | None, Query(pattern=f"^({'|'.join(STATES)})$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    return await asyncio.to_thread(ctx.rollouts.page, state, limit, offset)


@router.get("/{rollout_id}", response_model=RolloutDetail)
async def get_rollout(
    rollout_id: str,
    ctx: Ctx,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=MAX_UNITS, description="units shown")] = 1000,
    offset: Offset = 0,
    units: Annotated[
        Literal["all", "failed"], Query(description="every unit, or only those whose command failed")
    ] = "all",
) -> dict[str, Any]:
    view = await asyncio.to_thread(ctx.rollouts.view, rollout_id, True, limit, offset, units == "failed")
    if view is None:
        raise NotFound(f"no rollout with id {rollout_id!r}")
    return view


async def _operate(ctx, rollout_id: str, op: str, who: str = "") -> dict[str, Any]:
    if op == "cancel":  # NotFound, or RolloutConflict when the rollout's state does not allow `op`
        return await ctx.rollouts.cancel(rollout_id, who)
    return await getattr(ctx.rollouts, op)(rollout_id)


@router.post("/{rollout_id}/pause", response_model=RolloutPublic)
async def pause_rollout(rollout_id: str, ctx: Ctx, _: Operator) -> dict[str, Any]:
    """No new batch starts; commands already sent run to their end."""
    return await _operate(ctx, rollout_id, "pause")


@router.post("/{rollout_id}/resume", response_model=RolloutPublic)
async def resume_rollout(rollout_id: str, ctx: Ctx, _: Operator) -> dict[str, Any]:
    return await _operate(ctx, rollout_id, "resume")


@router.post("/{rollout_id}/cancel", response_model=RolloutPublic)
async def cancel_rollout(rollout_id: str, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """Units not sent anything yet, and commands still waiting for their unit, are canceled."""
    return await _operate(ctx, rollout_id, "cancel", who.label)
