"""Small rate limits: failed logins per source address, and log lines per key."""

from __future__ import annotations

import time


class FailureLimiter:
    """Blocks a source after `limit` failures within `window_s`; `limit` 0 disables it."""

    def __init__(self, limit: int, window_s: float = 60.0, max_sources: int = 10_000) -> None:
        self._limit = limit
        self._window = window_s
        self._max_sources = max_sources
        self._failures: dict[str, list[float]] = {}

    def blocked(self, source: str | None) -> bool:
        if not self._limit or source is None:
            return False
        recent = self._recent(source)
        return len(recent) >= self._limit

    def failed(self, source: str | None) -> None:
        if not self._limit or source is None:
            return
        if source not in self._failures and len(self._failures) >= self._max_sources:
            self._prune()
        self._failures[source] = [*self._recent(source), time.monotonic()]

    def _recent(self, source: str) -> list[float]:
        cutoff = time.monotonic() - self._window
        stamps = [t for t in self._failures.get(source, ()) if t > cutoff]
        if stamps:
            self._failures[source] = stamps
        else:
            self._failures.pop(source, None)
        return stamps

    def _prune(self) -> None:
        for source in list(self._failures):
            if not self._recent(source):
                del self._failures[source]
        while len(self._failures) >= self._max_sources:
            del self._failures[next(iter(self._failures))]


class LogThrottle:
    """Says whether a message about `key` may be logged now (at most once per `interval_s`)."""

    def __init__(self, interval_s: float = 60.0, max_keys: int = 10_000) -> None:
        self._interval = interval_s
        self._max_keys = max_keys
        self._last: dict[object, float] = {}

    def allow(self, key: object) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        if len(self._last) >= self._max_keys:
            self._last.clear()
        self._last[key] = now
        return True
