"""Alerts: the list (open first), one alert with its history, acknowledge."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from fleet_service.alerts.lifecycle import acknowledge, alert_detail
from fleet_service.alerts.listing import alert_page
from fleet_service.alerts.summary import alert_summary
from fleet_service.api.deps import Ctx, Operator, Viewer
from fleet_service.api.params import Offset, parse_time
from fleet_service.api.schemas.alerts import AlertDetail, AlertListed, AlertPublic, AlertSummary
from fleet_service.api.schemas.common import Page
from fleet_service.errors import Invalid
from protocol.ids import is_device_id
from protocol.tags import is_tag

router = APIRouter(prefix="/api/alerts", tags=["alerts"])
AlertId = Annotated[int, Path(ge=1, le=2**62)]
MAX_SUMMARY_UNITS = 1000  # a page of the unit list is at most 500 rows


@router.get("", response_model=Page[AlertListed])
async def list_alerts(
    ctx: Ctx,
    _: Viewer,
    state: Annotated[Literal["open", "firing", "acknowledged", "resolved"] | None, Query()] = None,
    severity: Annotated[Literal["info", "warning", "critical"] | None, Query()] = None,
    unit: Annotated[str | None, Query(description="a unit's id")] = None,
    tag: Annotated[str | None, Query(description="units carrying this tag")] = None,
    rule: Annotated[str | None, Query(max_length=32, description="a rule's id")] = None,
    since: Annotated[str | None, Query(description="fired at or after: ms since the epoch or ISO 8601")] = None,
    sort: Annotated[
        Literal["newest", "triage"],
        Query(description="open alerts first, then newest first; `triage`: firing before acknowledged, worst first"),
    ] = "newest",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    if unit is not None and not is_device_id(unit):
        raise Invalid(f"invalid unit id {unit!r}")
    if tag is not None and not is_tag(tag):
        raise Invalid(f"invalid tag {tag!r}")
    return await asyncio.to_thread(
        lambda: alert_page(
            ctx.engine,
            state=state,
            severity=severity,
            unit=unit,
            tag=tag,
            rule=rule,
            since=parse_time(since, "since"),
            sort=sort,
            limit=limit,
            offset=offset,
        )
    )


@router.get("/summary", response_model=AlertSummary)
async def summary(
    ctx: Ctx,
    _: Viewer,
    device_id: Annotated[
        list[str] | None,
        Query(
            description=f"also count these units' open alerts: ids comma-separated and/or repeated, at most "
            f"{MAX_SUMMARY_UNITS}"
        ),
    ] = None,
) -> dict[str, Any]:
    """The count a header shows (firing alerts no one acknowledged and no active silence covers, with the worst
    severity among them) and, for a page of units, each one's open alerts: one request, not one per unit."""
    ids = {part.strip() for value in device_id or [] for part in value.split(",")} - {""}
    if len(ids) > MAX_SUMMARY_UNITS:
        raise Invalid(f"device_id: at most {MAX_SUMMARY_UNITS} units, got {len(ids)}")
    bad = sorted(i for i in ids if not is_device_id(i))
    if bad:
        raise Invalid(f"device_id: {bad[0][:80]!r} is not a unit id")
    return await asyncio.to_thread(alert_summary, ctx.engine, ids)


@router.get("/{alert_id}", response_model=AlertDetail)
async def get_alert(alert_id: AlertId, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return await asyncio.to_thread(alert_detail, ctx.engine, alert_id)


@router.post("/{alert_id}/ack", response_model=AlertPublic)
async def ack_alert(alert_id: AlertId, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """firing -> acknowledged, recording who and when; 409 when it is already acknowledged or resolved."""
    alert = await asyncio.to_thread(acknowledge, ctx.engine, alert_id, who.label)
    ctx.bus.publish("alert", alert, alert["device_id"])
    return alert
