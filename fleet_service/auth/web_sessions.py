"""Dashboard login sessions: an HttpOnly cookie, stored only as its hash, with idle and absolute expiry.

The CSRF token is derived from the cookie value (HMAC), so it needs no storage, changes with every login,
and only a page that can read our own responses (same origin) ever learns it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.requests import HTTPConnection
from starlette.responses import Response

from fleet_service.auth.credentials import Identity
from fleet_service.auth.models import User, WebSession
from fleet_service.errors import Forbidden
from fleet_service.settings import ServiceSettings
from protocol.ids import now_ms
from protocol.secrets import fingerprint

__all__ = ["COOKIE_NAME", "CSRF_HEADER", "SessionAuth", "SessionStore", "csrf_for", "same_origin"]

COOKIE_NAME = "fleet_session"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TOUCH_EVERY_MS = 60_000  # idle expiry is tracked to the minute (at most): no database write per request


def same_origin(conn: HTTPConnection) -> bool:
    """A cookie-authenticated connection must come from our own pages (no cross-site hijacking): no Origin, or one
    naming the host the request was sent to."""
    origin = conn.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == conn.headers.get("host")


def csrf_for(session_token: str) -> str:
    mac = hmac.new(session_token.encode(), b"fleet-csrf-v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


@dataclass(frozen=True)
class Resolved:
    user: User
    csrf_token: str


class SessionStore:
    def __init__(self, engine: Engine, idle_s: int, max_age_s: int) -> None:
        self.engine = engine
        self.idle_ms = idle_s * 1000
        self.max_age_ms = max_age_s * 1000
        self.max_age_s = max_age_s
        self.touch_every_ms = min(_TOUCH_EVERY_MS, self.idle_ms // 4)

    def create(self, user: User, source_ip: str, user_agent: str) -> str:
        """A new session for `user` (the cookie value); expired sessions are swept on the way."""
        token = secrets.token_urlsafe(32)
        now = now_ms()
        with Session(self.engine) as s:
            s.exec(delete(WebSession).where(col(WebSession.expires_at) <= now))
            s.exec(delete(WebSession).where(col(WebSession.last_seen_at) <= now - self.idle_ms))
            s.add(
                WebSession(
                    id=fingerprint(token),
                    user_id=user.id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + self.max_age_ms,
                    source_ip=source_ip[:64],
                    user_agent=user_agent[:200],
                )
            )
            db_user = s.get(User, user.id)
            if db_user is not None:
                db_user.last_login_at = now
                s.add(db_user)
            s.commit()
        return token

    def resolve(self, token: str) -> Resolved | None:
        if not token or len(token) > 200:
            return None
        now = now_ms()
        with Session(self.engine, expire_on_commit=False) as s:
            row = s.get(WebSession, fingerprint(token))
            if row is None:
                return None
            if row.expires_at <= now or row.last_seen_at <= now - self.idle_ms:
                s.delete(row)
                s.commit()
                return None
            user = s.get(User, row.user_id)
            if user is None:
                return None
            if now - row.last_seen_at >= self.touch_every_ms:
                row.last_seen_at = now
                s.add(row)
                s.commit()
        return Resolved(user, csrf_for(token))

    def user_of(self, session_id: str) -> User | None:
        """The user of a live session, by its stored id (a cookie value's fingerprint); None once it has ended."""
        now = now_ms()
        with Session(self.engine, expire_on_commit=False) as s:
            row = s.get(WebSession, session_id)
            if row is None or row.expires_at <= now or row.last_seen_at <= now - self.idle_ms:
                return None
            if now - row.last_seen_at >= self.touch_every_ms:  # work in a unit's web UI counts as activity
                row.last_seen_at = now
                s.add(row)
                s.commit()
            return s.get(User, row.user_id)

    def delete(self, token: str) -> None:
        with Session(self.engine) as s:
            s.exec(delete(WebSession).where(col(WebSession.id) == fingerprint(token)))
            s.commit()

    def count_for(self, user_id: str) -> int:
        with Session(self.engine) as s:
            return len(s.exec(select(WebSession.id).where(WebSession.user_id == user_id)).all())


class SessionAuth:
    """The `app.state.session_auth` hook: cookie -> user identity, with the CSRF check on unsafe methods."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def __call__(self, conn: HTTPConnection) -> Identity | None:
        token = conn.cookies.get(COOKIE_NAME)
        if not token:
            return None
        resolved = await asyncio.to_thread(self.store.resolve, token)
        if resolved is None:
            return None
        identity = Identity("user", resolved.user.username, resolved.user.role)
        if conn.scope["type"] == "http" and conn.scope["method"] in UNSAFE_METHODS:
            sent = conn.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), resolved.csrf_token.encode()):
                conn.state.identity = identity  # the audit log names whose session was used without the token
                raise Forbidden("missing or wrong X-CSRF-Token header for a cookie-authenticated request")
        conn.state.csrf_token = resolved.csrf_token
        return identity


def set_session_cookie(response: Response, token: str, settings: ServiceSettings, https: bool) -> None:
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=settings.session_max_age_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=https or settings.cookie_secure,
    )


def clear_session_cookie(response: Response, settings: ServiceSettings, https: bool) -> None:
    response.delete_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=https or settings.cookie_secure
    )
