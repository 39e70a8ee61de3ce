"""Security headers on every HTTP response, and the OpenAPI documentation behind a login (or public, or off).

The dashboard is plain files with no inline script, so its policy allows scripts and connections from this origin
only. Styles come from this origin too, and inline styles are allowed: the terminal (xterm.js) writes its cell
sizes and colours as <style> elements it builds at run time, and true-colour cells as style attributes, which no
hash or nonce can cover. That opens no way out for data: an injected style could only fetch images and fonts,
and img-src and font-src keep those to this origin (and the dashboard builds its pages with textContent, never
HTML, so there is no markup to inject a style into).

The documentation pages are FastAPI's Swagger UI and ReDoc pages: they load their code from a CDN and start it with
one inline script, allowed by its hash and on those pages only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Literal

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet_service.api.deps import require

__all__ = ["CSP", "SECURITY_HEADERS", "ApiDocs", "SecurityHeadersMiddleware", "install_docs"]

ApiDocs = Literal["off", "auth", "public"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_CDN = "https://cdn.jsdelivr.net"
_DOCS_CSP = (
    "default-src 'none'; script-src {scripts}; style-src 'self' " + _CDN + " https://fonts.googleapis.com "
    "'unsafe-inline'; font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; worker-src blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'none'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS to every HTTP response that does not set them itself (the docs pages set their CSP)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _with_docs_csp(page: HTMLResponse) -> HTMLResponse:
    html = bytes(page.body).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    page.headers["content-security-policy"] = _DOCS_CSP.format(scripts=f"'self' {_CDN} {hashes}".strip())
    return page


def install_docs(app: FastAPI, mode: ApiDocs) -> None:
    """`/openapi.json`, `/docs` and `/redoc`: for any signed-in user or API token (auth), anyone (public), or
    nobody (off). Create the app with docs_url, redoc_url and openapi_url None."""
    if mode == "off":
        return
    needs = [] if mode == "public" else [Depends(require("viewer"))]
    title = f"{app.title} API"

    @app.get("/openapi.json", include_in_schema=False, dependencies=needs)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=needs)
    def swagger() -> HTMLResponse:
        return _with_docs_csp(
            get_swagger_ui_html(openapi_url="/openapi.json", title=title, swagger_ui_parameters={"validatorUrl": None})
        )

    @app.get("/redoc", include_in_schema=False, dependencies=needs)
    def redoc() -> HTMLResponse:
        return _with_docs_csp(get_redoc_html(openapi_url="/openapi.json", title=title))
