"""A unit port's own origin (`<label>.<domain>`, see fleet_service/terminal/unit_origin.py): everything asked of
that host goes to the unit's port, past the dashboard's routes, headers and audit.

`/.fleet-proxy/enter?ticket=...&next=...` exchanges the dashboard's one-time ticket for this host's cookie. Every
other request needs that cookie, and is checked again each time: the dashboard session it came from still open,
its user still an operator (an admin where the unit says so), the port still allowed, the unit online. A change
(POST, PUT, PATCH, DELETE) or a WebSocket must come from this origin's own pages: every unit origin is the same
site as the others, so without that check one unit's page could drive another's with the operator's cookie.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, Router, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from fleet_service.api.body_limit import BodyLimitMiddleware
from fleet_service.api.error_status import status_of
from fleet_service.api.routes.proxy import ENTER, METHODS
from fleet_service.api.unit_proxy import admit, refuse, serve_http, serve_websocket
from fleet_service.auth.credentials import Identity
from fleet_service.auth.web_sessions import UNSAFE_METHODS
from fleet_service.errors import FleetError, Forbidden
from fleet_service.refusals import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, Refused, refused
from fleet_service.terminal.unit_origin import UnitOrigins
from fleet_service.terminal.unit_ui_grants import COOKIE_NAME, SECURE_COOKIE_NAME, Grant, redeem_ticket, resolve_cookie

__all__ = ["UnitOriginDispatch"]

LABEL_KEY = "fleet.unit_label"
_AGAIN = "open the unit's web UI again from the dashboard (the unit's page, Web UI)"
_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


class UnitOriginDispatch:
    """ASGI: a request whose Host is a unit origin goes to that unit; any other to the dashboard's app."""

    def __init__(self, app: ASGIApp, origins: UnitOrigins, max_body_bytes: int) -> None:
        self.app = app
        self.origins = origins
        routes = [
            Route(ENTER, _enter, methods=["GET"]),
            Route("/{path:path}", _http, methods=METHODS),
            WebSocketRoute("/{path:path}", _websocket),
        ]
        self.unit = BodyLimitMiddleware(Router(routes=routes), max_bytes=max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            label = self.origins.label_of(host)
            if label is not None:
                await self.unit({**scope, LABEL_KEY: label}, receive, send)
                return
        await self.app(scope, receive, send)


def _text(status: int, message: str, retry_after: int | None = None) -> Response:
    headers = dict(_HEADERS)
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


def _https(conn: HTTPConnection) -> bool:
    return conn.url.scheme in ("https", "wss") or conn.app.state.ctx.settings.cookie_secure


async def _enter(request: Request) -> Response:
    label = request.scope[LABEL_KEY]
    target = request.query_params.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = "/"  # only a path of this origin: never a way to send the browser elsewhere
    engine = request.app.state.ctx.engine
    cookie = await asyncio.to_thread(redeem_ticket, engine, request.query_params.get("ticket", ""), label)
    if cookie is None:
        return _answer(Forbidden(f"This ticket is used, expired or for another unit: {_AGAIN}."))
    response = RedirectResponse(target, status_code=303, headers=_HEADERS)
    secure = _https(request)
    response.set_cookie(
        SECURE_COOKIE_NAME if secure else COOKIE_NAME, cookie, path="/", httponly=True, samesite="lax", secure=secure
    )
    return response


def _from_here(conn: HTTPConnection) -> bool:
    """The request comes from this origin's own pages (or from no page at all: typed, bookmarked, a script)."""
    origin = conn.headers.get("origin")
    if origin is not None:
        return urlsplit(origin).netloc == conn.headers.get("host")
    return conn.headers.get("sec-fetch-site") in (None, "same-origin", "none")


async def _granted(conn: HTTPConnection) -> tuple[Identity, Grant]:
    """Who this browser is and which unit port its cookie opens; Refused saying why not."""
    ctx = conn.app.state.ctx
    label = conn.scope[LABEL_KEY]
    token = conn.cookies.get(SECURE_COOKIE_NAME) or conn.cookies.get(COOKIE_NAME, "")
    grant = await asyncio.to_thread(resolve_cookie, ctx.engine, token, label) if token else None
    if grant is None:
        raise refused(CLOSE_UNAUTHENTICATED, f"No access to this unit's web UI here: {_AGAIN}.")
    user = await asyncio.to_thread(ctx.sessions.user_of, grant.web_session_id)
    if user is None:
        raise refused(CLOSE_UNAUTHENTICATED, f"The dashboard session this came from has ended: sign in and {_AGAIN}.")
    identity = Identity("user", user.username, user.role)
    await admit(conn, identity, grant.device_id, grant.port)
    return identity, grant


def _answer(exc: Exception) -> Response:
    """A refusal as plain text, with the status the API's handler would give it (the body limit's 413 as well)."""
    if isinstance(exc, HTTPException):  # raised by the body limit while the request is read
        return _text(exc.status_code, str(exc.detail))
    if isinstance(exc, FleetError) and (status := status_of(exc)) is not None:
        return _text(status, str(exc), getattr(exc, "retry_after", None))
    raise exc


async def _http(request: Request) -> Response:
    if request.method in UNSAFE_METHODS and not _from_here(request):
        return _answer(
            Forbidden("A change sent from another origin is refused: only this unit's own pages may send one.")
        )
    try:
        identity, grant = await _granted(request)
        return await serve_http(request, identity, grant.device_id, grant.port, request.path_params["path"], "")
    except (HTTPException, FleetError) as exc:
        return _answer(exc)


async def _websocket(ws: WebSocket) -> None:
    if not _from_here(ws):
        await refuse(ws, refused(CLOSE_FORBIDDEN, "a WebSocket opened from another origin is refused"))
        return
    try:
        identity, grant = await _granted(ws)
    except Refused as refusal:
        await refuse(ws, refusal)
        return
    await serve_websocket(ws, identity, grant.device_id, grant.port, ws.path_params["path"], "")
