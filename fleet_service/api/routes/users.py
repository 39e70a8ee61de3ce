"""Operator accounts (admin): list, create, change role or password, delete."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from fleet_service.api.deps import Admin, Ctx
from fleet_service.api.schemas.common import Items
from fleet_service.api.schemas.users import UserPublic
from fleet_service.auth.models import User, user_public
from fleet_service.auth.users import USERNAME_RE, add_user, delete_user, get_user, set_password, set_role
from fleet_service.errors import NotFound

router = APIRouter(prefix="/api/users", tags=["users"])
ROLE_PATTERN = "^(viewer|operator|admin)$"


class UserCreate(BaseModel):
    username: str = Field(pattern=USERNAME_RE.pattern)
    password: str = Field(min_length=8, max_length=1024)
    role: str = Field(pattern=ROLE_PATTERN)


class UserUpdate(BaseModel):
    role: str | None = Field(default=None, pattern=ROLE_PATTERN)
    password: str | None = Field(default=None, min_length=8, max_length=1024)


@router.get("", response_model=Items[UserPublic])
def list_users(ctx: Ctx, _: Admin) -> dict[str, Any]:
    with Session(ctx.engine) as s:
        rows = s.exec(select(User).order_by(col(User.username))).all()
    return {"items": [user_public(u) for u in rows]}


@router.post("", status_code=201, response_model=UserPublic)
async def create_user(body: UserCreate, request: Request, ctx: Ctx, _: Admin) -> dict[str, Any]:
    request.state.audit_target = body.username
    user = await asyncio.to_thread(add_user, ctx.engine, body.username, body.password, body.role)
    return user_public(user)


@router.patch("/{username}", response_model=UserPublic)
async def update_user(username: str, body: UserUpdate, ctx: Ctx, _: Admin) -> dict[str, Any]:
    """Change the role and/or password; a new password ends the user's sessions."""
    found = True  # each step says whether the user (still) exists: a concurrent DELETE makes this a 404
    if body.role is not None:
        found = await asyncio.to_thread(set_role, ctx.engine, username, body.role)
    if found and body.password is not None:
        found = await asyncio.to_thread(set_password, ctx.engine, username, body.password)
    user = await asyncio.to_thread(get_user, ctx.engine, username) if found else None
    if user is None:
        raise NotFound(f"no user named {username!r}")
    return user_public(user)


@router.delete("/{username}", status_code=204)
async def remove_user(username: str, ctx: Ctx, _: Admin) -> Response:
    if not await asyncio.to_thread(delete_user, ctx.engine, username):
        raise NotFound(f"no user named {username!r}")
    return Response(status_code=204)
