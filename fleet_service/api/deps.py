"""Route dependencies: the service context, the caller's identity and role checks, a unit by its id."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Annotated

from fastapi import Depends, Request
from pydantic import AfterValidator
from sqlmodel import Session
from starlette.requests import HTTPConnection

from fleet_service.auth.audit import AUDITED_METHODS
from fleet_service.auth.credentials import Identity, role_allows
from fleet_service.context import ServiceContext
from fleet_service.devices.models import Device
from fleet_service.errors import Forbidden, NotFound, TooManyRequests, Unauthenticated
from protocol import ProtocolError
from protocol.ids import check_device_id, is_device_id

log = logging.getLogger(__name__)


def _device_id(value: str) -> str:
    try:
        return check_device_id(value)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None


# A request field holding a new unit's id: 422 with the id rule when it breaks it.
DeviceIdField = Annotated[str, AfterValidator(_device_id)]


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx


Ctx = Annotated[ServiceContext, Depends(get_ctx)]


def source_ip(conn: HTTPConnection) -> str:
    """The caller's address (the proxy's X-Forwarded-For when uvicorn trusts it, see FORWARDED_ALLOW_IPS)."""
    return conn.client.host if conn.client else ""


def throttled(message: str, wait: float) -> TooManyRequests:
    """429 for a caller past its budget of failed credentials, with the seconds until it may fail again."""
    return TooManyRequests(message, wait)


async def authenticate(conn: HTTPConnection, ctx: ServiceContext) -> Identity | None:
    """Bearer token (operators), Basic device credentials (units), or the dashboard session cookie.

    Every bearer/Basic credential is checked, and a valid one is let in whatever else came from its address. A
    wrong one counts against the caller's source address; past the budget an HTTP request gets 429 instead of
    401 (a WebSocket is simply refused). The try is counted before the check, so parallel guesses see each other.
    """
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme in ("bearer", "basic") and value:
        ip = source_ip(conn)
        with ctx.limits.per_source.attempt(ip) if ctx.limits is not None else nullcontext() as attempt:
            if scheme == "bearer":
                identity = await ctx.auth.bearer_on_loop(value.strip())
                who = "an API token"
            else:
                try:
                    user, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    user, secret = "", ""
                # A malformed id names no unit (and PostgreSQL could not even look up one with a NUL in it)
                identity = await asyncio.to_thread(ctx.auth.device, user, secret) if is_device_id(user) else None
                who = f"unit {user}" if is_device_id(user) else "a malformed unit id"
            if identity is None and attempt is not None:
                wait = attempt.failed()
                if not wait:  # past the budget the caller is told so; the log is not flooded with its guesses
                    log.warning("failed authentication of %s from %s", who, ip)
                elif conn.scope["type"] == "http":
                    raise throttled("too many failed authentications from this address; try again later", wait)
        return identity
    session_auth = getattr(conn.app.state, "session_auth", None)
    if session_auth is not None:
        return await session_auth(conn)
    return None


async def identify(request: Request, ctx: Ctx) -> Identity:
    identity = await authenticate(request, ctx)
    if identity is None:
        if request.method in AUDITED_METHODS and ctx.limits is not None:
            # Counted as the audit log answers (fleet_service/auth/audit.py); past the budget refused here, unread.
            limiter = ctx.limits.unauthenticated(
                ctx.settings.unauthenticated_changes_per_source, ctx.settings.auth_window_s
            )
            if wait := limiter.blocked(source_ip(request)):
                raise throttled("too many unauthenticated changes from this address; try again later", wait)
        raise Unauthenticated("missing or invalid credentials")
    request.state.identity = identity
    return identity


def require(role: str) -> Callable:
    async def check(identity: Annotated[Identity, Depends(identify)]) -> Identity:
        if not role_allows(identity.role, role):
            raise Forbidden(f"this action needs the {role} role")
        return identity

    return check


def unit_or(role: str) -> Callable:
    """A unit (its Basic credentials) or an operator identity with at least `role`."""

    async def check(identity: Annotated[Identity, Depends(identify)]) -> Identity:
        if identity.role != "unit" and not role_allows(identity.role, role):
            raise Forbidden(f"this needs a unit's credentials or the {role} role")
        return identity

    return check


CallerAny = Annotated[Identity, Depends(identify)]
UnitOrOperator = Annotated[Identity, Depends(unit_or("operator"))]
Viewer = Annotated[Identity, Depends(require("viewer"))]
Operator = Annotated[Identity, Depends(require("operator"))]
Admin = Annotated[Identity, Depends(require("admin"))]


def load_device(ctx: ServiceContext, device_id: str) -> Device:
    with Session(ctx.engine) as s:
        device = s.get(Device, device_id)
    if device is None:
        raise NotFound(f"no unit with id {device_id!r}")
    return device
