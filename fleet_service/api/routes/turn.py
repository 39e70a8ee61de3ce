"""TURN credentials for units (Basic) and operators or admins (token/session), not viewers: the relay a WebRTC
session is set up through needs the operator role. The original shape kept for old units."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from fleet_service.api.deps import Ctx, UnitOrOperator
from fleet_service.api.schemas.system import LegacyTurnCredentials, TurnCredentials
from fleet_service.errors import TooManyRequests, Unavailable, UpstreamFailed
from turn_service import TurnRateLimitError, TurnUpstreamError

router = APIRouter(tags=["turn"])
MAX_TTL_QUERY = 2**31 - 1  # clamped to the provider's maximum anyway; this only keeps the number sane


async def _issue(ctx, who, ttl: int | None):
    if ctx.turn is None:
        raise Unavailable(ctx.turn_off_reason or "TURN is not configured")
    try:
        return await ctx.turn.issue(who.label, ttl)
    except TurnRateLimitError as exc:
        raise TooManyRequests("too many TURN credential requests; slow down", exc.retry_after) from None
    except TurnUpstreamError as exc:
        raise UpstreamFailed(str(exc)) from None


@router.get("/api/turn-credentials", response_model=TurnCredentials)
async def turn_credentials(
    ctx: Ctx,
    who: UnitOrOperator,
    ttl: Annotated[int | None, Query(ge=1, le=MAX_TTL_QUERY, description="seconds; clamped")] = None,
) -> Any:
    creds = await _issue(ctx, who, ttl)
    return JSONResponse(creds.to_api(), headers={"Cache-Control": "no-store"})


@router.get("/turn-credentials", response_model=LegacyTurnCredentials)
async def turn_credentials_legacy(
    ctx: Ctx, who: UnitOrOperator, ttl: Annotated[int | None, Query(ge=1, le=MAX_TTL_QUERY)] = None
) -> Any:
    creds = await _issue(ctx, who, ttl)
    return JSONResponse(creds.to_legacy(), headers={"Cache-Control": "no-store"})
