"""VerneMQ's webhooks (docs/scaling.md): auth_on_register, auth_on_publish and auth_on_subscribe, each answered
200 with `{"result": "ok"}` or `{"result": {"error": ...}}`; a subscribe with some filters refused lists every
filter, the refused ones with qos 128.

With FLEET_BROKER_AUTH_CACHE_S set, an allowed answer carries `cache-control: max-age=...`, which VerneMQ caches:
fewer calls, but a revoked unit keeps what was allowed until its entries expire. A refusal is never cached.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError

from fleet_service.api.broker_guard import BrokerCaller, body_schema, read_body
from fleet_service.api.deps import Ctx
from fleet_service.api.schemas.broker_auth import (
    VerneAnswer,
    VernePublish,
    VerneRegister,
    VerneSubscribe,
    VerneSubscribeAnswer,
)
from fleet_service.broker_auth.checks import Access

router = APIRouter(tags=["broker auth"])
SHAPE = "vernemq"
HOOK_HEADER = "vernemq-hook"
REFUSED_QOS = 128
NOT_ALLOWED = {"result": {"error": "not_allowed"}}


def _hook(request: Request, expected: str) -> None:
    """VerneMQ names the hook in a header: one registered on the wrong route is a 422, not a wrong answer."""
    named = request.headers.get(HOOK_HEADER)
    if named is not None and named != expected:
        raise RequestValidationError(
            [{"loc": ("header", HOOK_HEADER), "msg": f"this route answers {expected}, not {named}", "type": "value"}]
        )


def _cacheable(response: Response, ctx: Ctx) -> None:
    if ctx.settings.broker_auth_cache_s:
        response.headers["cache-control"] = f"max-age={ctx.settings.broker_auth_cache_s}"


@router.post("/api/broker-auth/vernemq/register", response_model=VerneAnswer, openapi_extra=body_schema(VerneRegister))
async def vernemq_register(request: Request, response: Response, ctx: Ctx, checks: BrokerCaller) -> Any:
    _hook(request, "auth_on_register")
    body = await read_body(request, VerneRegister)
    login = await checks.login(body.username, body.password, body.client_id, body.peer_addr)
    checks.count(SHAPE, "register", login.allowed)
    if not login.allowed:
        return NOT_ALLOWED
    _cacheable(response, ctx)
    return {"result": "ok"}


@router.post("/api/broker-auth/vernemq/publish", response_model=VerneAnswer, openapi_extra=body_schema(VernePublish))
async def vernemq_publish(request: Request, response: Response, ctx: Ctx, checks: BrokerCaller) -> Any:
    _hook(request, "auth_on_publish")
    body = await read_body(request, VernePublish)
    [allowed] = await checks.may(body.username, [body.topic], Access.PUBLISH, body.client_id)
    checks.count(SHAPE, "publish", allowed)
    if not allowed:
        return NOT_ALLOWED
    _cacheable(response, ctx)
    return {"result": "ok"}


@router.post(
    "/api/broker-auth/vernemq/subscribe",
    response_model=VerneSubscribeAnswer,
    response_model_exclude_none=True,
    openapi_extra=body_schema(VerneSubscribe),
)
async def vernemq_subscribe(request: Request, response: Response, ctx: Ctx, checks: BrokerCaller) -> Any:
    _hook(request, "auth_on_subscribe")
    body = await read_body(request, VerneSubscribe)
    filters = [t.topic for t in body.topics]
    allowed = await checks.may(body.username, filters, Access.SUBSCRIBE, body.client_id)
    checks.count(SHAPE, "subscribe", all(allowed))
    if all(allowed):
        _cacheable(response, ctx)
        return {"result": "ok"}
    topics = [
        {"topic": t.topic, "qos": t.qos if ok else REFUSED_QOS} for t, ok in zip(body.topics, allowed, strict=True)
    ]
    return {"result": "ok", "topics": topics}
