"""EMQX 5's HTTP authentication and authorization backends (docs/scaling.md): answered 200 with a `result`.

Bodies are read after the broker token is checked, so a caller without it learns nothing from a malformed body."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from fleet_service.api.broker_guard import BrokerCaller, body_schema, read_body
from fleet_service.api.schemas.broker_auth import EmqxAuthn, EmqxAuthnAnswer, EmqxAuthz, EmqxAuthzAnswer
from fleet_service.broker_auth.checks import Access

router = APIRouter(tags=["broker auth"])
SHAPE = "emqx"


@router.post("/api/broker-auth/emqx/authn", response_model=EmqxAuthnAnswer, openapi_extra=body_schema(EmqxAuthn))
async def emqx_authn(request: Request, checks: BrokerCaller) -> Any:
    """A client connects: `allow` (the service account as superuser) or `deny`, never `ignore`."""
    body = await read_body(request, EmqxAuthn)
    login = await checks.login(body.username, body.password, body.clientid, body.peerhost)
    checks.count(SHAPE, "authn", login.allowed)
    return {"result": "allow" if login.allowed else "deny", "is_superuser": login.superuser}


@router.post("/api/broker-auth/emqx/authz", response_model=EmqxAuthzAnswer, openapi_extra=body_schema(EmqxAuthz))
async def emqx_authz(request: Request, checks: BrokerCaller) -> Any:
    """A client publishes or subscribes: `allow` or `deny` by the per-unit topic rule."""
    body = await read_body(request, EmqxAuthz)
    access = Access.PUBLISH if body.action == "publish" else Access.SUBSCRIBE
    [allowed] = await checks.may(body.username, [body.topic], access, body.clientid)
    checks.count(SHAPE, "authz", allowed)
    return {"result": "allow" if allowed else "deny"}
