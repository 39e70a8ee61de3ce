"""Operator API tokens: create (shown once), list, revoke."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from fleet_service.api.deps import Admin, Ctx
from fleet_service.api.schemas.common import Items
from fleet_service.api.schemas.users import TokenCreated, TokenPublic
from fleet_service.auth.credentials import create_token, revoke_token
from fleet_service.auth.models import ApiToken
from fleet_service.db.columns import iso
from fleet_service.errors import NotFound

router = APIRouter(prefix="/api/tokens", tags=["tokens"])


class TokenRequest(BaseModel):
    role: str = Field(pattern="^(viewer|operator|admin)$")
    name: str = Field(default="", max_length=100)


def token_public(t: ApiToken) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "role": t.role, "created_at": iso(t.created_at), "revoked": t.revoked}


@router.post("", status_code=201, response_model=TokenCreated)
async def new_token(body: TokenRequest, ctx: Ctx, _: Admin) -> dict[str, Any]:
    row, plain = await asyncio.to_thread(create_token, ctx.engine, body.role, body.name)
    return {**token_public(row), "token": plain}


@router.get("", response_model=Items[TokenPublic])
def list_tokens(ctx: Ctx, _: Admin) -> dict[str, Any]:
    with Session(ctx.engine) as s:
        rows = s.exec(select(ApiToken).order_by(col(ApiToken.created_at))).all()
    return {"items": [token_public(t) for t in rows]}


@router.delete("/{token_id}", status_code=204)
def revoke(token_id: str, ctx: Ctx, _: Admin) -> Response:
    if not revoke_token(ctx.engine, token_id):
        raise NotFound(f"no token with id {token_id!r}")
    return Response(status_code=204)
