"""A per-key token bucket, kept small: idle keys are forgotten."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Allow `burst` requests at once per key, refilled at `rate` per second."""

    def __init__(
        self, rate: float, burst: int, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._prune_at = max_keys
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last update)

    def allow(self, key: str) -> bool:
        """Take one token for `key`; False when its bucket is empty."""
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > self._prune_at:
            self._forget_idle(now)
        return True

    def retry_after(self, key: str) -> float:
        """Seconds until `key` has a token again (0 when it has one now)."""
        tokens = self._tokens(key, self._clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(self.burst)
        tokens, last = bucket
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket at all.
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        # If most keys are busy, wait for the table to double before scanning it again.
        self._prune_at = max(self._max_keys, 2 * len(self._buckets))
