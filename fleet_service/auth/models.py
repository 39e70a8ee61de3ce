"""Operators, API tokens, browser sessions, the audit log and claim tokens. Secrets never sit here in
plain text."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from fleet_service.db.columns import BIG_ID, iso, json_field, ms_field


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(default="", max_length=100)
    role: str = Field(max_length=16)
    fingerprint: str = Field(max_length=64, unique=True)
    created_at: int = ms_field()
    last_used_at: int | None = ms_field(default=None, nullable=True)
    revoked: bool = False


class User(SQLModel, table=True):
    """A dashboard/API operator; the password is stored as a salted slow hash."""

    __tablename__ = "fleet_user"  # `user` is a reserved word in PostgreSQL

    id: str = Field(primary_key=True, max_length=32)
    username: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=200)
    created_at: int = ms_field()
    password_changed_at: int = ms_field()
    last_login_at: int | None = ms_field(default=None, nullable=True)


class WebSession(SQLModel, table=True):
    """A dashboard login; `id` is the SHA-256 of the cookie value, so the table alone cannot log anyone in."""

    __tablename__ = "web_session"

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=32, index=True)
    created_at: int = ms_field()
    last_seen_at: int = ms_field()
    expires_at: int = ms_field(index=True)
    source_ip: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=200)


class AuditEntry(SQLModel, table=True):
    """One state-changing API call: who, what, on which target, when, with which result."""

    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_ts", "ts"), Index("ix_audit_target_ts", "target", "ts"))

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    ts: int = ms_field()
    actor: str = Field(max_length=120)
    role: str = Field(default="", max_length=16)
    method: str = Field(max_length=8)
    route: str = Field(max_length=200)
    path: str = Field(max_length=300)
    target: str = Field(default="", max_length=120)
    status: int
    source_ip: str = Field(default="", max_length=64)


class ClaimToken(SQLModel, table=True):
    """A one-time token a unit presents at install time to enroll itself (no admin token on the unit)."""

    __tablename__ = "claim_token"

    id: str = Field(primary_key=True, max_length=32)
    fingerprint: str = Field(max_length=64, unique=True)
    tags: list[str] = json_field(list)
    created_at: int = ms_field()
    expires_at: int = ms_field()
    created_by: str = Field(default="", max_length=120)
    used_at: int | None = ms_field(default=None, nullable=True)
    device_id: str | None = Field(default=None, max_length=63)


def user_public(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "username": u.username,
        "role": u.role,
        "created_at": iso(u.created_at),
        "password_changed_at": iso(u.password_changed_at),
        "last_login_at": iso(u.last_login_at),
    }


def audit_public(a: AuditEntry) -> dict[str, Any]:
    return {
        "id": a.id,
        "ts": a.ts,
        "time": iso(a.ts),
        "actor": a.actor,
        "role": a.role,
        "method": a.method,
        "route": a.route,
        "path": a.path,
        "target": a.target,
        "status": a.status,
        "source_ip": a.source_ip,
    }


def claim_token_public(c: ClaimToken, now: int) -> dict[str, Any]:
    state = "used" if c.used_at is not None else ("expired" if c.expires_at <= now else "open")
    return {
        "id": c.id,
        "tags": c.tags,
        "created_at": iso(c.created_at),
        "expires_at": iso(c.expires_at),
        "created_by": c.created_by,
        "state": state,
        "used_at": iso(c.used_at),
        "device_id": c.device_id,
    }
