"""Route dependencies: the service context, the caller's identity and role checks, time parameters."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from pydantic import AfterValidator
from sqlmodel import Session
from starlette.requests import HTTPConnection

from fleet_service.context import ServiceContext
from fleet_service.models import Device
from fleet_service.ratelimit import FailureLimiter
from fleet_service.security import Identity, role_allows
from protocol import ProtocolError
from protocol.ids import check_device_id, is_device_id

log = logging.getLogger(__name__)

MAX_OFFSET = 10**9
MAX_JSON_DEPTH = 32  # config documents and command args: far past any real one, far below the serializers' limits
MAX_TS_MS = 10**14  # the protocol's bound on timestamps (protocol.payloads.Ts): year 5138
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also says yes to "³", which int() refuses

# Paging: past 10**9 rows there is nothing to show, and a bigger number overflows the database's integer.
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]


def _device_id(value: str) -> str:
    try:
        return check_device_id(value)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None


# A request field holding a new unit's id: 422 with the id rule when it breaks it.
DeviceIdField = Annotated[str, AfterValidator(_device_id)]


def check_json_document(value: Any, what: str) -> Any:
    """ValueError for a document nested past MAX_JSON_DEPTH or holding NaN/Infinity, which are not JSON (Python
    reads 1e400 as inf) and which PostgreSQL refuses to store."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"{what} is nested too deep (at most {MAX_JSON_DEPTH} levels)")
            pending.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{what} holds NaN or Infinity (or a number past 1e308), which JSON does not allow")
    return value


# A free-form JSON object stored and sent on as given (command args).
JsonObject = Annotated[dict[str, Any], AfterValidator(lambda v: check_json_document(v, "args"))]


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx


Ctx = Annotated[ServiceContext, Depends(get_ctx)]

_UNAUTHORIZED = HTTPException(401, "missing or invalid credentials", headers={"WWW-Authenticate": "Bearer"})


def source_ip(conn: HTTPConnection) -> str:
    """The caller's address (the proxy's X-Forwarded-For when uvicorn trusts it, see FORWARDED_ALLOW_IPS)."""
    return conn.client.host if conn.client else ""


def throttled(message: str, wait: float) -> HTTPException:
    """429 for a caller past its budget of failed credentials, with the seconds until it may fail again."""
    return HTTPException(429, message, headers={"Retry-After": FailureLimiter.retry_after(wait)})


async def authenticate(conn: HTTPConnection, ctx: ServiceContext) -> Identity | None:
    """Bearer token (operators), Basic device credentials (units), or the dashboard session cookie.

    Every bearer/Basic credential is checked, and a valid one is let in whatever else came from its address. A
    wrong one counts against the caller's source address; past the budget an HTTP request gets 429 instead of
    401 (a WebSocket is simply refused).
    """
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme in ("bearer", "basic") and value:
        if scheme == "bearer":
            identity = await asyncio.to_thread(ctx.auth.bearer, value.strip())
            who = "an API token"
        else:
            try:
                user, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, secret = "", ""
            # A malformed id names no unit (and PostgreSQL could not even look up one with a NUL in it)
            identity = await asyncio.to_thread(ctx.auth.device, user, secret) if is_device_id(user) else None
            who = f"unit {user}" if is_device_id(user) else "a malformed unit id"
        if identity is None and ctx.limits is not None:
            ip = source_ip(conn)
            wait = ctx.limits.per_source.failed(ip)
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
        raise _UNAUTHORIZED
    request.state.identity = identity
    return identity


def require(role: str) -> Callable:
    async def check(identity: Annotated[Identity, Depends(identify)]) -> Identity:
        if identity.role == "unit" or not role_allows(identity.role, role):
            raise HTTPException(403, f"this action needs the {role} role")
        return identity

    return check


CallerAny = Annotated[Identity, Depends(identify)]
Viewer = Annotated[Identity, Depends(require("viewer"))]
Operator = Annotated[Identity, Depends(require("operator"))]
Admin = Annotated[Identity, Depends(require("admin"))]


def load_device(ctx: ServiceContext, device_id: str) -> Device:
    with Session(ctx.engine) as s:
        device = s.get(Device, device_id)
    if device is None:
        raise HTTPException(404, f"no unit with id {device_id!r}")
    return device


def parse_time(value: str | None, name: str) -> int | None:
    """Integer milliseconds since the epoch or an ISO 8601 time with a zone, 0 <= ms < 10**14; 422 otherwise."""
    if value is None or value == "":
        return None
    if _DIGITS.fullmatch(value):
        ms = int(value) if len(value) <= 15 else MAX_TS_MS  # no int() of a thousand digits
    else:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise HTTPException(422, f"{name} must be milliseconds since the epoch or an ISO 8601 time") from None
        if dt.tzinfo is None:
            raise HTTPException(422, f"{name} needs a time zone (e.g. a trailing Z)")
        ms = int(dt.timestamp() * 1000)
    if not 0 <= ms < MAX_TS_MS:
        raise HTTPException(422, f"{name} must lie between 1970 and the year 5138 (0 to {MAX_TS_MS - 1} ms)")
    return ms
