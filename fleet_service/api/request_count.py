"""`fleet_http_requests_total` by status class: counted as each answer starts, in plain ASGI.

Starlette's `@app.middleware("http")` runs every request through a task group and memory streams, which costs
about a millisecond per request on the command path (docs/performance.md); this only wraps `send`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet_service.prometheus import Registry

__all__ = ["RequestCounter"]


class RequestCounter:
    def __init__(self, app: ASGIApp, registry: Registry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.registry.inc("fleet_http_requests_total", code=f"{message['status'] // 100}xx")
            await send(message)

        await self.app(scope, receive, counted)
