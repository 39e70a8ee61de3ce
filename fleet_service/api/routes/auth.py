"""Dashboard login and logout: a session cookie plus the CSRF token the page sends back on changes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fleet_service.api.deps import Ctx, authenticate, source_ip, throttled
from fleet_service.api.schemas.users import LoginAnswer, SessionState
from fleet_service.auth.credentials import Identity
from fleet_service.auth.users import check_password, get_user
from fleet_service.auth.web_sessions import COOKIE_NAME, clear_session_cookie, csrf_for, set_session_cookie
from fleet_service.errors import Unauthorized

router = APIRouter(prefix="/api/auth", tags=["auth"])
log = logging.getLogger(__name__)


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


def _is_https(request: Request) -> bool:
    return request.url.scheme in ("https", "wss")


@router.post("/login", response_model=LoginAnswer)
async def login(body: LoginRequest, request: Request, ctx: Ctx) -> JSONResponse:
    """Check a username and password; 200 sets the `fleet_session` cookie and returns the CSRF token."""
    ip = source_ip(request)
    login_key = ctx.limits.login_key(ip, body.username)
    # Both tries are counted before the (slow) password check, so guesses sent in parallel see each other.
    with ctx.limits.per_login.attempt(login_key) as for_login, ctx.limits.per_source.attempt(ip) as for_source:
        if for_login.over:  # the lock-out of this account from this address: even the right password waits
            raise throttled("too many failed logins for this user; try again later", for_login.wait)
        user = await asyncio.to_thread(check_password, ctx.engine, body.username, body.password)
        if user is None:
            wait = max(for_login.failed(), for_source.failed())
            # Name the account only when it exists: a password typed into the username field stays out of logs.
            known = await asyncio.to_thread(get_user, ctx.engine, body.username) is not None
            request.state.audit_target = body.username if known else ""
            if wait:
                raise throttled("too many failed logins; try again later", wait)
            log.warning("failed login for %s from %s", body.username if known else "an unknown user", ip)
            raise Unauthorized("wrong username or password")
    ctx.limits.per_login.reset(login_key)
    token = await asyncio.to_thread(ctx.sessions.create, user, ip, request.headers.get("user-agent", ""))
    request.state.identity = Identity("user", user.username, user.role)
    request.state.audit_target = user.username
    log.info("user %s logged in from %s", user.username, ip)
    response = JSONResponse(
        {"user": {"username": user.username, "role": user.role}, "csrf_token": csrf_for(token)},
        headers={"Cache-Control": "no-store"},
    )
    set_session_cookie(response, token, ctx.settings, _is_https(request))
    return response


@router.post("/logout", status_code=204)
async def logout(request: Request, ctx: Ctx) -> Response:
    """End the cookie's session (X-CSRF-Token required while it is valid); always clears the cookie."""
    token = request.cookies.get(COOKIE_NAME)
    if token:
        identity = await request.app.state.session_auth(request)  # 403 on a missing/wrong CSRF token
        if identity is not None:
            request.state.identity = identity
            await asyncio.to_thread(ctx.sessions.delete, token)
    response = Response(status_code=204)
    clear_session_cookie(response, ctx.settings, _is_https(request))
    return response


@router.get("/session", response_model=SessionState, response_model_exclude_unset=True)
async def session(request: Request, ctx: Ctx) -> dict[str, Any]:
    """Who is signed in, like /api/me, but "nobody" is a 200 (`signed_in: false`), not a 401: the dashboard asks
    this on every load, and a browser logs every 401 as an error."""
    identity = await authenticate(request, ctx)
    if identity is None:
        return {"signed_in": False}
    body: dict[str, Any] = {"signed_in": True, "kind": identity.kind, "name": identity.name, "role": identity.role}
    csrf = getattr(request.state, "csrf_token", None)
    if csrf:
        body["csrf_token"] = csrf
    return body
