"""The FastAPI application: routes, limits, error shapes, the dashboard, and the service's lifespan."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from fleet_service.api import db_errors
from fleet_service.api.body_limit import BodyLimitMiddleware
from fleet_service.api.connections import PerIdentityLimit
from fleet_service.api.error_status import status_of
from fleet_service.api.headers import SecurityHeadersMiddleware, install_docs
from fleet_service.api.request_count import RequestCounter
from fleet_service.api.routes import (
    alert_rules,
    alerts,
    audit,
    auth,
    broker_emqx,
    broker_goauth,
    broker_vernemq,
    claims,
    commands,
    config,
    config_groups,
    devices,
    events,
    forward,
    notification_channels,
    proxy,
    relay,
    rollouts,
    silences,
    system,
    tags,
    telemetry,
    terminal,
    tokens,
    turn,
    users,
)
from fleet_service.api.unit_origin_app import UnitOriginDispatch
from fleet_service.auth.audit import AuditMiddleware
from fleet_service.auth.web_sessions import SessionAuth
from fleet_service.context import ServiceContext
from fleet_service.errors import FleetError, Unauthenticated
from fleet_service.settings import ServiceSettings
from fleet_service.terminal.http_proxy import Pool
from fleet_service.terminal.unit_origin import UnitOrigins
from protocol import ProtocolError

if TYPE_CHECKING:
    from broker.server import EmbeddedBroker

log = logging.getLogger(__name__)


def create_app(settings: ServiceSettings, engine: Engine, broker: EmbeddedBroker | None = None) -> FastAPI:
    """Build the app around a migrated database; the lifespan starts ingest and background tasks."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx: ServiceContext = app.state.ctx
        ctx.start()
        try:
            yield
        finally:
            if ctx.broker is not None:
                # Embedded: close MQTT first, so everything units were acknowledged (and their Wills) is
                # still consumed and drained by ctx.stop() below.
                ctx.link.stopping()
                await ctx.broker.stop()
            await ctx.stop()

    app = FastAPI(
        title="Fleet",
        version="0.1.0",
        lifespan=lifespan,
        description="Fleet manager for edge video recorders",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )  # see install_docs
    app.state.ctx = ServiceContext.build(settings, engine, broker)
    # claims before devices: `POST /api/devices/claim` is a route of its own, not a unit called "claim"
    for module in (
        system,
        auth,
        claims,
        devices,
        telemetry,
        commands,
        config,
        events,
        tokens,
        turn,
        relay,
        users,
        audit,
        config_groups,
        rollouts,
        tags,
        alerts,
        alert_rules,
        silences,
        notification_channels,
        terminal,
        forward,
        proxy,
        broker_emqx,
        broker_goauth,
        broker_vernemq,
    ):
        app.include_router(module.router)
    app.state.session_auth = SessionAuth(app.state.ctx.sessions)
    app.state.event_streams = PerIdentityLimit(settings.events_streams_per_identity)
    app.state.relay_sockets = PerIdentityLimit(settings.relay_sockets_per_identity)
    app.state.terminal_sockets = PerIdentityLimit(settings.terminal_sockets_per_identity)
    app.state.forward_streams = PerIdentityLimit(settings.forward_streams_per_identity)
    app.state.proxy_pool = Pool()
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(AuditMiddleware, engine=engine, loop_db=app.state.ctx.loop_db)
    _install_limits_and_errors(app)
    app.add_middleware(SecurityHeadersMiddleware)  # every answer of ours, errors and the dashboard's included
    app.state.unit_origins = UnitOrigins(settings.proxy_origin)
    # outermost: a unit origin's requests go to the unit, past the dashboard's routes, headers and audit
    app.add_middleware(UnitOriginDispatch, origins=app.state.unit_origins, max_body_bytes=settings.max_request_bytes)
    install_docs(app, settings.api_docs)
    dashboard = resources.files("dashboard")
    app.mount("/", StaticFiles(directory=str(dashboard), html=True), name="dashboard")
    return app


def _install_limits_and_errors(app: FastAPI) -> None:
    registry = app.state.ctx.registry

    app.add_middleware(RequestCounter, registry=registry)

    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "")} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": message or "invalid request", "errors": errors}, status_code=422)

    db_errors.install(app)

    @app.exception_handler(FleetError)
    async def fleet_error(conn: HTTPConnection, exc: FleetError) -> JSONResponse:
        if isinstance(conn, WebSocket):
            raise exc  # a WebSocket route closes its socket with a code of its own
        status = status_of(exc)
        if status is None:
            raise exc  # a FleetError of no known kind is a bug: a 500 with its traceback
        headers = {}
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if isinstance(exc, Unauthenticated):
            headers["WWW-Authenticate"] = "Bearer"  # the challenge a 401 for missing credentials carries
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers or None)

    @app.exception_handler(ProtocolError)
    async def protocol_error(_: Request, exc: ProtocolError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)
