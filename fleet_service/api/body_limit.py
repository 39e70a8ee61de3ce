"""Request body size limit for every route, with or without a Content-Length header (chunked uploads)."""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware"]

DRAIN_FACTOR = 16  # read (and drop) up to this many times the limit so the client sees the 413, not a reset


class BodyLimitMiddleware:
    """413 up front when Content-Length is too big; otherwise counts the bytes as the route reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"request body over {self.max_bytes} bytes"

    async def _drain(self, receive: Receive, already: int) -> None:
        """Swallow the rest of an oversized body, up to a bound, so the response can be read by the client."""
        seen = already
        while seen <= self.max_bytes * DRAIN_FACTOR:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            if int(length) <= self.max_bytes * DRAIN_FACTOR:
                await self._drain(receive, 0)
            body = json.dumps({"detail": self._detail()}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if message.get("more_body", False):
                        await self._drain(receive, seen)
                    # FastAPI re-raises HTTPException from body reading; its exception handler answers 413.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)
