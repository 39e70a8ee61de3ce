"""Operator accounts, API tokens, the caller and the dashboard login (fleet_service/auth/models.py)."""

from __future__ import annotations

from fleet_service.api.schemas.common import Public

__all__ = ["LoginAnswer", "LoginUser", "Me", "TokenCreated", "TokenPublic", "UserPublic"]


class UserPublic(Public):
    id: str
    username: str
    role: str
    created_at: str
    password_changed_at: str
    last_login_at: str | None


class TokenPublic(Public):
    id: str
    name: str
    role: str
    created_at: str
    revoked: bool


class TokenCreated(TokenPublic):
    token: str  # shown this once


class Me(Public):
    kind: str
    name: str
    role: str
    csrf_token: str | None = None  # a dashboard session only (the key is absent otherwise)


class SessionState(Public):
    """`GET /api/auth/session`: who is signed in, or `signed_in: false` (then no other key)."""

    signed_in: bool
    kind: str | None = None
    name: str | None = None
    role: str | None = None
    csrf_token: str | None = None  # a dashboard session only


class LoginUser(Public):
    username: str
    role: str


class LoginAnswer(Public):
    user: LoginUser
    csrf_token: str
