"""What the HTTP senders share: checking a receiver's URL, and one POST turned into a `SendResult`."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import httpx

from fleet_service.errors import Invalid
from fleet_service.notify.message import SendResult

_sending: ContextVar[bool] = ContextVar("notify_sending", default=False)


class _QuietWhileSending(logging.Filter):
    """httpx logs each request's URL at INFO; a chat webhook's URL is its credential, so not while we send."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: ARG002
        return not _sending.get()


logging.getLogger("httpx").addFilter(_QuietWhileSending())

# Worth another attempt: the receiver timed out, is rate limiting, or failed itself.
RETRY_STATUSES = frozenset({408, 429})


def check_url(value: Any, field: str) -> str:
    """An http(s) URL with a host, or Invalid naming `field`."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{field}: required, an http:// or https:// URL")
    url = value.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise Invalid(f"{field}: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"{field}: must be an http:// or https:// URL with a host")
    if len(url) > 2000:
        raise Invalid(f"{field}: longer than 2000 characters")
    return url


def only_keys(given: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise Invalid(f"{where}.{unknown[0]}: not a setting of this channel kind")


async def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> SendResult:
    """POST `body`; 2xx is ok, 408/429/5xx and transport errors may be retried, other answers not. Errors name
    what happened, never the URL (a chat webhook's URL is its credential)."""
    token = _sending.set(True)
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        return SendResult(False, None, "timed out", retry=True)
    except httpx.HTTPError as exc:
        return SendResult(False, None, f"{type(exc).__name__}: could not reach the receiver", retry=True)
    finally:
        _sending.reset(token)
    code = response.status_code
    if 200 <= code < 300:
        return SendResult(True, code)
    retry = code in RETRY_STATUSES or code >= 500
    return SendResult(False, code, f"HTTP {code}: {response.text[:200]}", retry=retry)
