"""Counting failed authentications per key (source IP; source IP and username) over a sliding window.

Only failures count, and only failures are refused: a credential is always checked, a valid one is let in, and
a wrong one from a key past its budget answers 429 instead of 401. So a unit or an operator behind the same
address (a venue's NAT, an office) is never locked out by someone else's wrong guesses. The exception is the
login lock-out per address and username, which holds even the right password back: that is what stops
guessing one account's password.

A try is counted before its credential is checked (`attempt`), not after: guesses sent in parallel see each
other while they are still being checked, so 60 at once get no more 401s (nor, past the lock-out, password
checks) than 60 in a row. A try that turns out valid gives its place back.

In-memory and per replica: with N replicas an attacker gets at most N times the budget, which is still
far too small to guess a 256-bit unit secret or API token, and slows password guessing to a crawl.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["Attempt", "AuthLimits", "FailureLimiter"]


class FailureLimiter:
    """`blocked(key)` says how long a key must wait once it has `limit` failures inside `window_s`."""

    def __init__(
        self, limit: int, window_s: float, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = max(1, limit)
        self.window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._pending: dict[str, int] = {}  # tries being checked right now, per key
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _wait(self, times: deque[float] | None, now: float) -> float:
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.001, times[-self.limit] + self.window_s - now)

    def blocked(self, key: str) -> float:
        """Seconds until `key` may try again; 0 when it may try now."""
        with self._lock:
            now = self._clock()
            return self._wait(self._recent(key, now), now)

    def fail(self, key: str) -> None:
        self.failed(key)

    def failed(self, key: str) -> float:
        """Count a failure of `key`. 0 when it was within its budget (a 401); else how long it must now wait."""
        return self.attempt(key).failed()

    def attempt(self, key: str) -> Attempt:
        """Take a place in `key`'s budget before checking a credential; settle it with `failed()` or `passed()`.

        Failures already counted and tries still being checked both use the budget: `over` says it was used up.
        """
        with self._lock:
            now = self._clock()
            times = self._recent(key, now)
            pending = self._pending.get(key, 0)
            over = (len(times) if times else 0) + pending >= self.limit
            self._pending[key] = pending + 1
            return Attempt(self, key, max(0.001, self._wait(times, now)) if over else 0.0)

    def _settle(self, key: str, failed: bool) -> float:
        with self._lock:
            pending = self._pending.pop(key, 0) - 1
            if pending > 0:
                self._pending[key] = pending
            if not failed:
                return 0.0
            now = self._clock()
            times = self._recent(key, now)
            if times is None:
                times = self._failures[key] = deque(maxlen=self.limit)
                if len(self._failures) > self._max_keys:
                    self._failures.popitem(last=False)  # forget the oldest key rather than grow without bound
            self._failures.move_to_end(key)
            times.append(now)
            return self._wait(times, now)

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))


class Attempt:
    """One try of a key, counted before its credential is checked. Settle it once: `failed()` (a wrong credential)
    or `passed()` (a valid one, which gives its place back); leaving a `with` block unsettled passes it."""

    def __init__(self, limiter: FailureLimiter, key: str, wait: float) -> None:
        self._limiter = limiter
        self._key = key
        self.wait = wait  # > 0: the budget was used up when this try began; seconds until a place frees up
        self._settled = False

    @property
    def over(self) -> bool:
        return self.wait > 0

    def failed(self) -> float:
        """Count the failure: 0 when the try was within the budget (a 401), else how long to wait (a 429)."""
        if self._settled:
            raise RuntimeError("this attempt is already settled")
        self._settled = True
        wait = self._limiter._settle(self._key, failed=True)
        return max(0.001, wait) if self.over else 0.0

    def passed(self) -> None:
        if not self._settled:
            self._settled = True
            self._limiter._settle(self._key, failed=False)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.passed()


class AuthLimits:
    """The service's budgets: failed logins per source and username, failed credentials of any kind per source,
    and unauthenticated changes per source. Not per username alone: then anyone could lock any account out from
    anywhere."""

    def __init__(self, per_user: int, per_source: int, window_s: float) -> None:
        self.per_login = FailureLimiter(per_user, window_s)
        self.per_source = FailureLimiter(per_source, window_s)
        self._unauthenticated: FailureLimiter | None = None
        self._lock = threading.Lock()

    def unauthenticated(self, per_source: int, window_s: float) -> FailureLimiter:
        """Changes (POST/PUT/PATCH/DELETE) answered without a valid credential, per source: each is an audit row
        while within this budget, past it only a counter, and routes that need a credential answer 429.
        Made on first use from the settings the request brings."""
        with self._lock:
            if self._unauthenticated is None:
                self._unauthenticated = FailureLimiter(per_source, window_s)
            return self._unauthenticated

    @staticmethod
    def login_key(source: str, username: str) -> str:
        return f"{source} {username.lower()}"
