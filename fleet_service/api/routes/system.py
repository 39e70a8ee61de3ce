"""Health, Prometheus metrics, and who-am-I."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from fleet_service.api.deps import CallerAny, Ctx, Viewer
from fleet_service.api.schemas.system import Health
from fleet_service.api.schemas.users import Me

router = APIRouter(tags=["system"])


def _db_ok(ctx) -> bool:
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "degraded"}})
async def health(ctx: Ctx) -> JSONResponse:
    db = await asyncio.to_thread(_db_ok, ctx)
    broker = ctx.link.connected.is_set()
    body = {
        "status": "ok" if db and broker else "degraded",
        "service": "fleet",
        "broker": "connected" if broker else "disconnected",
        "database": "ok" if db else "unavailable",
    }
    return JSONResponse(body, status_code=200 if db and broker else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format 0.0.4"}},
)
def prometheus(ctx: Ctx, _: Viewer) -> PlainTextResponse:
    return PlainTextResponse(ctx.registry.render(), media_type="text/plain; version=0.0.4")


@router.get("/api/me", response_model=Me, response_model_exclude_unset=True)
def me(who: CallerAny, request: Request) -> dict[str, Any]:
    """Who is calling; a dashboard session also gets its CSRF token back (for a reloaded page)."""
    body: dict[str, Any] = {"kind": who.kind, "name": who.name, "role": who.role}
    csrf = getattr(request.state, "csrf_token", None)
    if csrf:
        body["csrf_token"] = csrf
    return body
