"""The shared secret clustered brokers call /api/broker-auth/... with (FLEET_BROKER_AUTH_TOKEN), and reading
their bodies.

The secret comes as `Authorization: Bearer <token>` (EMQX's `headers`) or as the password of HTTP Basic (any user
name; VerneMQ and go-auth send no custom headers, but their HTTP clients turn `user:password@` in the endpoint URL
into Basic). Nothing else opens these routes: an operator's token or a unit's credentials are wrong tokens here.
Without the setting the routes answer 404, as if they did not exist. Wrong tokens count against the caller's
address like any failed credential (the service's per-source budget): 401 within it, 429 past it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import Annotated, TypeVar
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from fleet_service.api.deps import Ctx, source_ip, throttled
from fleet_service.broker_auth.checks import BrokerAuth
from fleet_service.errors import NotFound, Unauthenticated

__all__ = ["BrokerCaller", "read_body"]

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def _offered(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            return base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


async def broker_caller(request: Request, ctx: Ctx) -> BrokerAuth:
    token = ctx.settings.broker_auth_token
    if token is None or ctx.broker_auth is None:
        raise NotFound("Not Found")  # the routes are off: as if they did not exist
    offered = _offered(request.headers.get("authorization", ""))
    ip = source_ip(request)
    with ctx.limits.per_source.attempt(ip) as attempt:
        if offered is not None and hmac.compare_digest(offered.encode(), token.get_secret_value().encode()):
            return ctx.broker_auth
        wait = attempt.failed()
    if wait:
        raise throttled("too many failed authentications from this address; try again later", wait)
    log.warning("broker auth call from %s without the right broker token", ip)
    raise Unauthenticated("missing or wrong broker token")


BrokerCaller = Annotated[BrokerAuth, Depends(broker_caller)]


async def read_body(request: Request, model: type[M]) -> M:
    """A JSON object or a form (`application/x-www-form-urlencoded`) as `model`; 422 naming the field otherwise."""
    raw = await request.body()
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            data: object = dict(parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw)))
        except (UnicodeDecodeError, ValueError):
            raise RequestValidationError([{"loc": ("body",), "msg": "not a valid form", "type": "form"}]) from None
    else:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise RequestValidationError([{"loc": ("body",), "msg": "not valid JSON", "type": "json"}]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def body_schema(model: type[BaseModel], form: bool = False) -> dict:
    """The OpenAPI request body of a route that reads `model` itself (JSON, and with `form` a form too)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: object) -> object:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    kinds = ("application/json", "application/x-www-form-urlencoded") if form else ("application/json",)
    return {"requestBody": {"required": True, "content": {kind: {"schema": inline(schema)} for kind in kinds}}}
