"""Errors raised by turn_service.

    TurnError                 base of everything this package raises on purpose
    ├── TurnConfigError       settings are missing or invalid; raised at start
    ├── TurnUpstreamError     the credential provider failed (timeout, non-2xx, bad JSON)
    ├── TurnRateLimitError    one identity asked too often; carries `retry_after`
    └── TurnUnsupportedError  the configured provider cannot do this (e.g. revoke with hmac)

Messages are safe to log and to return to API clients: they never contain a
secret, an API token or an upstream response body.
"""

from __future__ import annotations

import math

__all__ = ["TurnConfigError", "TurnError", "TurnRateLimitError", "TurnUnsupportedError", "TurnUpstreamError"]


class TurnError(Exception):
    """Base class for turn_service errors."""


class TurnConfigError(TurnError):
    """The TURN settings cannot work; the message names the FLEET_TURN_* variable to fix."""


class TurnUpstreamError(TurnError):
    """The upstream credential service did not give us usable credentials."""


class TurnRateLimitError(TurnError):
    """An identity exceeded its credential request rate."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many TURN credential requests; retry in {math.ceil(retry_after)} s")
        self.retry_after = retry_after


class TurnUnsupportedError(TurnError):
    """The operation is not available with the configured provider."""
