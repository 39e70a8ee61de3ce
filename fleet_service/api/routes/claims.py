"""Self-enrollment: admins make one-time claim tokens; a unit trades one for its own id and secret."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, field_validator
from sqlmodel import Session, col, select

from fleet_service.api.deps import Admin, Ctx, DeviceIdField, source_ip, throttled
from fleet_service.api.schemas.claims import ClaimTokenCreated, ClaimTokenPublic
from fleet_service.api.schemas.common import Items
from fleet_service.api.schemas.devices import DeviceEnrolled
from fleet_service.auth.claims import DEFAULT_TTL_S, MAX_TTL_S, ClaimRefused, create_claim_token, redeem
from fleet_service.auth.credentials import Identity
from fleet_service.auth.models import ClaimToken, claim_token_public
from fleet_service.devices.models import device_public
from fleet_service.errors import NotFound
from protocol.ids import now_ms
from protocol.tags import check_tags

router = APIRouter(tags=["enrollment"])
log = logging.getLogger(__name__)


class ClaimTokenRequest(BaseModel):
    tags: list[str] = Field(default_factory=list)
    ttl_s: int = Field(default=DEFAULT_TTL_S, ge=60, le=MAX_TTL_S)

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, tags: list[str]) -> list[str]:
        return check_tags(tags)


class ClaimRequest(BaseModel):
    token: str = Field(min_length=1, max_length=200)
    id: DeviceIdField
    name: str | None = Field(default=None, max_length=200)


@router.post("/api/devices/claim", status_code=201, response_model=DeviceEnrolled)
async def claim(body: ClaimRequest, request: Request, ctx: Ctx) -> dict[str, Any]:
    """A unit enrolls itself with a one-time claim token -> 201 with its secret (shown this once)."""
    ip = source_ip(request)
    request.state.audit_target = body.id
    try:
        device, secret, claim_id = await asyncio.to_thread(
            redeem, ctx.engine, body.token, body.id, body.name or "", ctx.plugin_auth
        )
    except ClaimRefused:  # a 401, counted against the caller's address
        wait = ctx.limits.per_source.failed(ip)
        if wait:
            raise throttled("too many failed claims from this address; try again later", wait) from None
        log.warning("refused claim for unit %s from %s: unknown, used or expired token", body.id, ip)
        raise
    request.state.identity = Identity("claim", claim_id, "unit")
    log.info("unit %s enrolled itself with claim token %s from %s", device.id, claim_id, ip)
    await ctx.on_credentials_changed(device.id)
    ctx.bus.publish("device", {"device_id": device.id, "action": "enrolled"}, device.id)
    return {**device_public(device), "secret": secret}


@router.post("/api/claim-tokens", status_code=201, response_model=ClaimTokenCreated)
async def new_claim_token(body: ClaimTokenRequest, ctx: Ctx, who: Admin) -> dict[str, Any]:
    row, plain = await asyncio.to_thread(create_claim_token, ctx.engine, body.tags, body.ttl_s, who.label)
    return {**claim_token_public(row, now_ms()), "token": plain}


@router.get("/api/claim-tokens", response_model=Items[ClaimTokenPublic])
def list_claim_tokens(
    ctx: Ctx,
    _: Admin,
    state: Annotated[str | None, Query(pattern="^(open|used|expired)$")] = None,
) -> dict[str, Any]:
    now = now_ms()
    with Session(ctx.engine) as s:
        rows = s.exec(select(ClaimToken).order_by(col(ClaimToken.created_at).desc()).limit(1000)).all()
    items = [claim_token_public(c, now) for c in rows]
    return {"items": [i for i in items if state is None or i["state"] == state]}


@router.delete("/api/claim-tokens/{claim_id}", status_code=204)
def delete_claim_token(claim_id: str, ctx: Ctx, _: Admin) -> Response:
    with Session(ctx.engine) as s:
        row = s.get(ClaimToken, claim_id)
        if row is None:
            raise NotFound(f"no claim token with id {claim_id!r}")
        s.delete(row)
        s.commit()
    return Response(status_code=204)
