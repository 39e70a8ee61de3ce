"""`/api/devices/{id}/proxy/{port}/{path}`: a unit's own web server (HTTP and WebSocket) through the fleet service.

Scripts (a bearer token) get the unit's answers here, with `Content-Security-Policy: sandbox` so that a page never
runs with the dashboard's origin should a browser ever render one. A browser signed in to the dashboard gets a
redirect instead: to the unit port's own origin (fleet_service/terminal/unit_origin.py) with a one-time ticket,
where the page runs unable to read the dashboard or act with its cookie. Not in the OpenAPI document: what
answers here is the unit's server, not the fleet's API.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import RedirectResponse, Response

from fleet_service.api.deps import authenticate
from fleet_service.api.unit_proxy import admit, refuse, serve_http, serve_websocket
from fleet_service.auth.credentials import Identity
from fleet_service.auth.web_sessions import COOKIE_NAME
from fleet_service.errors import Forbidden, Unavailable
from fleet_service.refusals import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, Refused, refused
from fleet_service.terminal.forward_access import parse_port
from fleet_service.terminal.unit_origin import UnitOrigins, label_for
from fleet_service.terminal.unit_ui_grants import mint_ticket
from protocol.secrets import fingerprint

router = APIRouter(tags=["terminal"])

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PREFIX = "/api/devices/{device_id}/proxy/{port}"
ENTER = "/.fleet-proxy/enter"  # on a unit origin: the ticket's way in
SANDBOX = [("content-security-policy", "sandbox")]
OWN_ORIGIN = "a unit's web UI is served on its own origin, never the dashboard's"


async def _bearer(conn: Request | WebSocket) -> Identity | None:
    """The caller of a script (a bearer token); None for a browser (the dashboard's cookie, or nothing)."""
    if "authorization" not in conn.headers:
        return None
    identity = await authenticate(conn, conn.app.state.ctx)
    if identity is None:
        raise refused(CLOSE_UNAUTHENTICATED, "missing or invalid credentials")
    return identity


@router.api_route(PREFIX, methods=METHODS, include_in_schema=False)
async def proxy_root(request: Request) -> Response:
    """The prefix itself: on to its trailing slash, so the unit's relative links resolve under it."""
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"{request.url.path}/{query}", status_code=307)


@router.api_route(PREFIX + "/{path:path}", methods=METHODS, include_in_schema=False)
async def proxy(request: Request, device_id: str, port: str, path: str) -> Response:
    number = parse_port(port)  # a refusal from here on answers by its kind (422, 401, 403, 404, ...)
    identity = await _bearer(request)
    if identity is None:
        return await _to_own_origin(request, device_id, number, path)
    await admit(request, identity, device_id, number)
    prefix = f"/api/devices/{device_id}/proxy/{number}"
    return await serve_http(request, identity, device_id, number, path, prefix, SANDBOX)


async def _to_own_origin(request: Request, device_id: str, port: int, path: str) -> Response:
    """A signed-in browser: a one-time ticket for the unit port's own origin, and the redirect there."""
    ctx = request.app.state.ctx
    token = request.cookies.get(COOKIE_NAME, "")
    resolved = await asyncio.to_thread(ctx.sessions.resolve, token)
    if resolved is None:
        raise refused(CLOSE_UNAUTHENTICATED, "missing or invalid credentials")
    identity = Identity("user", resolved.user.username, resolved.user.role)
    request.state.identity = identity
    label = label_for(device_id, port)
    origins: UnitOrigins = request.app.state.unit_origins
    origin = origins.origin(label, request.url.scheme, request.headers.get("host", ""))
    if request.method not in ("GET", "HEAD"):
        where = f": open {origin}/ in the browser" if origin else ""
        raise Forbidden(OWN_ORIGIN + where)
    if origin is None:
        raise Unavailable(
            f"{OWN_ORIGIN}, and this service has none to give: set FLEET_PROXY_ORIGIN to a wildcard name that "
            "reaches this service (e.g. https://*.units.example.com), or reach the dashboard as localhost"
        )
    await admit(request, identity, device_id, port)
    ticket = await asyncio.to_thread(mint_ticket, ctx.engine, fingerprint(token), device_id, port, label)
    target = "/" + path + (f"?{request.url.query}" if request.url.query else "")
    location = f"{origin}{ENTER}?ticket={ticket}&next={quote(target, safe='')}"
    return RedirectResponse(location, status_code=303, headers={"cache-control": "no-store"})


@router.websocket(PREFIX + "/{path:path}")
async def proxy_websocket(ws: WebSocket, device_id: str, port: str, path: str) -> None:
    try:
        number = parse_port(port)
        identity = await _bearer(ws)
        if identity is None:
            signed_in = await asyncio.to_thread(ws.app.state.ctx.sessions.resolve, ws.cookies.get(COOKIE_NAME, ""))
            if signed_in is None:
                raise refused(CLOSE_UNAUTHENTICATED, "missing or invalid credentials")
            raise refused(CLOSE_FORBIDDEN, OWN_ORIGIN + ": open it from the dashboard")
        await admit(ws, identity, device_id, number)
    except Refused as refusal:
        await refuse(ws, refusal)
        return
    await serve_websocket(ws, identity, device_id, number, path, f"/api/devices/{device_id}/proxy/{number}")
