"""mosquitto-go-auth's HTTP backend (docs/scaling.md): JSON or form bodies, answered by status, 200 or 403, with
the `{"ok", "error"}` body its `json` response mode reads."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fleet_service.api.broker_guard import BrokerCaller, body_schema, read_body
from fleet_service.api.schemas.broker_auth import GoAuthAcl, GoAuthAnswer, GoAuthSuperuser, GoAuthUser
from fleet_service.broker_auth.checks import Access
from protocol.ids import SERVICE_USERNAME

router = APIRouter(tags=["broker auth"])
SHAPE = "go-auth"
DENIED: dict[int | str, dict[str, Any]] = {403: {"model": GoAuthAnswer, "description": "refused"}}
# acc: 1 read (a message delivered to the client), 2 write (publish), 3 both, 4 subscribe
ACCESSES = {1: (Access.READ,), 2: (Access.PUBLISH,), 3: (Access.READ, Access.PUBLISH), 4: (Access.SUBSCRIBE,)}


def _answer(allowed: bool) -> JSONResponse:
    if allowed:
        return JSONResponse({"ok": True, "error": ""})
    return JSONResponse({"ok": False, "error": "not allowed"}, status_code=403)


@router.post(
    "/api/broker-auth/go-auth/user",
    response_model=GoAuthAnswer,
    responses=DENIED,
    openapi_extra=body_schema(GoAuthUser, form=True),
)
async def go_auth_user(request: Request, checks: BrokerCaller) -> JSONResponse:
    """A client connects with a user name and password."""
    body = await read_body(request, GoAuthUser)
    login = await checks.login(body.username, body.password, body.clientid, None)
    checks.count(SHAPE, "user", login.allowed)
    return _answer(login.allowed)


@router.post(
    "/api/broker-auth/go-auth/superuser",
    response_model=GoAuthAnswer,
    responses=DENIED,
    openapi_extra=body_schema(GoAuthSuperuser, form=True),
)
async def go_auth_superuser(request: Request, checks: BrokerCaller) -> JSONResponse:
    """Only the service account is a superuser (go-auth asks this after the user check has passed)."""
    body = await read_body(request, GoAuthSuperuser)
    allowed = body.username == SERVICE_USERNAME
    checks.count(SHAPE, "superuser", allowed)
    return _answer(allowed)


@router.post(
    "/api/broker-auth/go-auth/acl",
    response_model=GoAuthAnswer,
    responses=DENIED,
    openapi_extra=body_schema(GoAuthAcl, form=True),
)
async def go_auth_acl(request: Request, checks: BrokerCaller) -> JSONResponse:
    """A client publishes, subscribes or is delivered a message; `acc` 3 needs both reading and writing."""
    body = await read_body(request, GoAuthAcl)
    allowed = True
    for access in ACCESSES[body.acc]:
        [ok] = await checks.may(body.username, [body.topic], access, body.clientid)
        allowed = allowed and ok
    checks.count(SHAPE, "acl", allowed)
    return _answer(allowed)
