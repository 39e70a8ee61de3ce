"""Cloudflare Realtime TURN: one upstream credential, cached and shared, refreshed at half its life."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from turn_service.config import CLOUDFLARE_MAX_TTL
from turn_service.credentials import IceCredentials
from turn_service.errors import TurnConfigError, TurnUpstreamError

__all__ = ["CloudflareProvider"]

log = logging.getLogger(__name__)


@dataclass
class _Cached:
    ice_servers: list[dict[str, Any]]
    username: str
    issued_at: float
    expires_at: float
    refresh_at: float


def _parse_ice_servers(data: Any) -> list[dict[str, Any]]:
    """The `iceServers` of a generate-ice-servers answer, normalised; ValueError if unusable."""
    if not isinstance(data, dict) or "iceServers" not in data:
        raise ValueError("no iceServers")
    servers = data["iceServers"]
    if isinstance(servers, dict):  # the older /credentials/generate answer: a single object
        servers = [servers]
    if not isinstance(servers, list) or not servers:
        raise ValueError("iceServers is not a non-empty list")
    out: list[dict[str, Any]] = []
    for server in servers:
        if not isinstance(server, dict):
            raise ValueError("iceServers entry is not an object")
        urls = server.get("urls")
        urls = [urls] if isinstance(urls, str) else urls
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ValueError("iceServers entry without urls")
        entry: dict[str, Any] = {"urls": urls}
        if "username" in server or "credential" in server:
            if not isinstance(server.get("username"), str) or not isinstance(server.get("credential"), str):
                raise ValueError("iceServers entry with a malformed username/credential")
            entry["username"] = server["username"]
            entry["credential"] = server["credential"]
        out.append(entry)
    if not any("username" in entry for entry in out):
        raise ValueError("no iceServers entry carries a credential")
    return out


class CloudflareProvider:
    """Fetches ICE servers from Cloudflare's API; every caller shares the cached credential."""

    name = "cloudflare"

    def __init__(
        self,
        key_id: str,
        api_token: str,
        *,
        base_url: str = "https://rtc.live.cloudflare.com/v1",
        ttl: int = 3600,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        failure_backoff: float = 2.0,
    ) -> None:
        if not key_id or not api_token:
            raise TurnConfigError(
                "the cloudflare TURN provider needs FLEET_TURN_CLOUDFLARE_KEY_ID and FLEET_TURN_CLOUDFLARE_API_TOKEN"
            )
        self._keys_url = f"{base_url.rstrip('/')}/turn/keys/{quote(key_id, safe='')}/credentials"
        self._ttl = max(1, min(ttl, CLOUDFLARE_MAX_TTL))
        self._timeout = timeout
        self._clock = clock
        self._failure_backoff = failure_backoff
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_token}"},
            follow_redirects=False,
        )
        self._cached: _Cached | None = None
        self._inflight: asyncio.Task[_Cached] | None = None
        self._failed_until = 0.0
        self.requests: Counter[str] = Counter()  # upstream calls by operation: generate, revoke
        self.errors: Counter[str] = Counter()  # failed upstream calls by reason

    async def get(self) -> IceCredentials:
        """The shared credential; fetched on first use and again once half its TTL has passed."""
        now = self._clock()
        cached = self._cached
        if cached is not None and now < cached.refresh_at:
            return self._view(cached, now)
        if self._inflight is None:
            # Single flight: whoever comes first starts the fetch, everyone awaits the same task.
            self._inflight = asyncio.create_task(self._refresh())
            self._inflight.add_done_callback(_consume_exception)
        # shield: one caller going away must not cancel the fetch the others wait for.
        fresh = await asyncio.shield(self._inflight)
        return self._view(fresh, self._clock())

    async def revoke(self, username: str) -> None:
        """Revoke one issued credential at Cloudflare (204); the cache drops it if it was the shared one."""
        self.requests["revoke"] += 1
        response = await self._post(f"{self._keys_url}/{quote(username, safe='')}/revoke", None)
        if response.status_code not in (200, 204):
            raise self._status_error(response)
        if self._cached is not None and self._cached.username == username:
            self._cached = None

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        await self._client.aclose()

    async def _refresh(self) -> _Cached:
        try:
            now = self._clock()
            cached = self._cached
            if now < self._failed_until:
                if cached is not None and self._usable(cached, now):
                    return cached
                raise TurnUpstreamError("Cloudflare TURN is failing; retrying shortly")
            try:
                fresh = await self._generate()
            except TurnUpstreamError as exc:
                self._failed_until = self._clock() + self._failure_backoff
                if cached is not None and self._usable(cached, self._clock()):
                    log.warning("TURN credential refresh failed (%s); serving the cached one", exc)
                    return cached
                raise
            self._cached = fresh
            return fresh
        finally:
            self._inflight = None

    def _usable(self, cached: _Cached, now: float) -> bool:
        # A stale credential is still served while at least a quarter of its life is left.
        return now < cached.expires_at - (cached.expires_at - cached.issued_at) / 4

    async def _generate(self) -> _Cached:
        self.requests["generate"] += 1
        started = self._clock()
        response = await self._post(f"{self._keys_url}/generate-ice-servers", {"ttl": self._ttl})
        if response.status_code not in (200, 201):
            raise self._status_error(response)
        try:
            servers = _parse_ice_servers(response.json())
        except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
            self.errors["bad_response"] += 1
            log.warning("Cloudflare TURN answer unusable (%s, %d bytes)", type(exc).__name__, len(response.content))
            raise TurnUpstreamError("Cloudflare TURN answered with an unusable body") from None
        username = next(s["username"] for s in servers if "username" in s)
        return _Cached(
            ice_servers=servers,
            username=username,
            issued_at=started,
            expires_at=started + self._ttl,
            refresh_at=started + self._ttl / 2,
        )

    async def _post(self, url: str, body: dict[str, Any] | None) -> httpx.Response:
        # Errors are re-raised `from None`: httpx exceptions carry the request, and with it the bearer token.
        try:
            return await self._client.post(url, json=body)
        except httpx.TimeoutException:
            self.errors["timeout"] += 1
            raise TurnUpstreamError(f"Cloudflare TURN did not answer within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            self.errors["transport"] += 1
            raise TurnUpstreamError(f"Cloudflare TURN request failed ({type(exc).__name__})") from None

    def _status_error(self, response: httpx.Response) -> TurnUpstreamError:
        self.errors["status"] += 1
        # Log the size, not the body: upstream bodies may echo request details.
        log.warning("Cloudflare TURN answered HTTP %d (%d bytes)", response.status_code, len(response.content))
        hint = " (check the key id and API token)" if response.status_code in (401, 403, 404) else ""
        return TurnUpstreamError(f"Cloudflare TURN answered HTTP {response.status_code}{hint}")

    def _view(self, cached: _Cached, now: float) -> IceCredentials:
        return IceCredentials(
            ice_servers=copy.deepcopy(cached.ice_servers),
            expires_at=datetime.fromtimestamp(cached.expires_at, UTC),
            ttl=max(1, int(cached.expires_at - now)),
            provider=self.name,
        )


def _consume_exception(task: asyncio.Task[Any]) -> None:
    # The shared task's error reaches every waiting caller; this stops asyncio's "never retrieved" log.
    if not task.cancelled():
        task.exception()
