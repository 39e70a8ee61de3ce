"""The audit log (admin): newest first, filtered by actor, target, method, route, status and time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlmodel import Session, col, func, select

from fleet_service.api.deps import Admin, Ctx
from fleet_service.api.params import Offset, parse_time
from fleet_service.api.schemas.audit import AuditEntryPublic
from fleet_service.api.schemas.common import Page
from fleet_service.auth.models import AuditEntry, audit_public

router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("", response_model=Page[AuditEntryPublic])
def list_audit(
    ctx: Ctx,
    _: Admin,
    actor: Annotated[str | None, Query(max_length=120, description="e.g. user:alice, token:ci")] = None,
    target: Annotated[str | None, Query(max_length=120, description="a unit id, username, token id ...")] = None,
    method: Annotated[
        str | None, Query(pattern="^(POST|PUT|PATCH|DELETE|CLI)$", description="CLI: command line")
    ] = None,
    route: Annotated[
        str | None, Query(max_length=200, description="route template, e.g. /api/devices/{device_id}")
    ] = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    failed: Annotated[bool | None, Query(description="only calls answered with 4xx/5xx (or only 2xx/3xx)")] = None,
    since: str | None = None,
    until: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    query = select(AuditEntry)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if target:
        query = query.where(AuditEntry.target == target)
    if method:
        query = query.where(AuditEntry.method == method)
    if route:
        query = query.where(AuditEntry.route == route)
    if status is not None:
        query = query.where(AuditEntry.status == status)
    if failed is not None:
        query = query.where(AuditEntry.status >= 400 if failed else AuditEntry.status < 400)
    if (t := parse_time(since, "since")) is not None:
        query = query.where(AuditEntry.ts >= t)
    if (t := parse_time(until, "until")) is not None:
        query = query.where(AuditEntry.ts <= t)
    with Session(ctx.engine) as s:
        total = s.exec(select(func.count()).select_from(query.subquery())).one()
        rows = s.exec(
            query.order_by(col(AuditEntry.ts).desc(), col(AuditEntry.id).desc()).offset(offset).limit(limit)
        ).all()
    return {"items": [audit_public(a) for a in rows], "total": total, "limit": limit, "offset": offset}
