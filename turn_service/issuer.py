"""TurnIssuer: the one object fleet_service holds; picks the provider, rate-limits and counts."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import httpx

from turn_service.cloudflare_provider import CloudflareProvider
from turn_service.config import TurnSettings
from turn_service.credentials import IceCredentials
from turn_service.errors import TurnRateLimitError, TurnUnsupportedError, TurnUpstreamError
from turn_service.hmac_provider import HmacProvider
from turn_service.ratelimit import RateLimiter

__all__ = ["TurnIssuer"]


class TurnIssuer:
    """Issues ICE credentials per identity; raises TurnConfigError at construction if settings cannot work."""

    def __init__(
        self,
        settings: TurnSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._hmac: HmacProvider | None = None
        self._cloudflare: CloudflareProvider | None = None
        if settings.provider == "hmac":
            self._hmac = HmacProvider(
                settings.accepted_secrets,
                settings.urls,
                default_ttl=settings.ttl,
                max_ttl=settings.max_ttl,
                clock=clock,
            )
        else:
            self._cloudflare = CloudflareProvider(
                settings.cloudflare_key_id,
                settings.cloudflare_api_token.get_secret_value(),
                base_url=settings.cloudflare_base_url,
                ttl=min(settings.ttl, settings.max_ttl),
                timeout=settings.request_timeout,
                transport=transport,
                clock=clock,
            )
        self.limiter: RateLimiter | None = (
            RateLimiter(settings.rate_per_minute / 60, settings.rate_burst) if settings.rate_per_minute > 0 else None
        )
        self._issued: Counter[str] = Counter()
        self._issued_by_identity: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()

    @property
    def provider(self) -> str:
        return self.settings.provider

    async def issue(self, identity: str, ttl: int | None = None) -> IceCredentials:
        """Credentials for `identity` (a device id or user name; never put on the wire as is).

        `ttl` is clamped to 1 s .. max_ttl by the hmac provider; the cloudflare provider
        serves its shared cached credential and reports the time it has left.
        Raises TurnRateLimitError, TurnUpstreamError.
        """
        if not identity:
            raise ValueError("identity must be a non-empty string")
        if self.limiter is not None and not self.limiter.allow(identity):
            self._errors["rate_limited"] += 1
            raise TurnRateLimitError(self.limiter.retry_after(identity))
        if self._hmac is not None:
            credentials = self._hmac.mint(identity, ttl)
        else:
            assert self._cloudflare is not None
            try:
                credentials = await self._cloudflare.get()
            except TurnUpstreamError:
                self._errors["upstream"] += 1
                raise
        self._issued[self.provider] += 1
        self._issued_by_identity[identity] += 1
        return credentials

    def verify(self, username: str, credential: str) -> bool:
        """hmac only: True if coturn would accept this pair now (any configured secret, not expired)."""
        if self._hmac is None:
            raise TurnUnsupportedError("cloudflare credentials are opaque and cannot be verified locally")
        return self._hmac.verify(username, credential)

    async def revoke(self, username: str) -> None:
        """cloudflare only: revoke one credential upstream."""
        if self._cloudflare is None:
            raise TurnUnsupportedError(
                "hmac TURN credentials cannot be revoked one by one; rotate FLEET_TURN_SECRETS instead"
            )
        try:
            await self._cloudflare.revoke(username)
        except TurnUpstreamError:
            self._errors["upstream"] += 1
            raise

    def counters(self) -> dict[str, dict[str, int]]:
        """Metric name -> {label value: count}, ready for Prometheus counters.

        Labels: issued_total by `provider`, issued_by_identity_total by `identity`,
        errors_total by `kind` (rate_limited, upstream), upstream_requests_total by
        `operation` (generate, revoke), upstream_errors_total by `reason`
        (timeout, transport, status, bad_response).
        """
        cf = self._cloudflare
        return {
            "turn_credentials_issued_total": dict(self._issued),
            "turn_credentials_issued_by_identity_total": dict(self._issued_by_identity),
            "turn_errors_total": dict(self._errors),
            "turn_upstream_requests_total": dict(cf.requests) if cf else {},
            "turn_upstream_errors_total": dict(cf.errors) if cf else {},
        }

    async def aclose(self) -> None:
        if self._cloudflare is not None:
            await self._cloudflare.aclose()

    async def __aenter__(self) -> TurnIssuer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
