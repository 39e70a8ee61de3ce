"""Counting failed authentications per key (source IP; source IP and username) over a sliding window.

Only failures count, and only failures are refused: a credential is always checked, a valid one is let in, and
a wrong one from a key past its budget answers 429 instead of 401. So a unit or an operator behind the same
address (a venue's NAT, an office) is never locked out by someone else's wrong guesses. The exception is the
login lock-out per address and username, which holds even the right password back: that is what stops
guessing one account's password.

In-memory and per replica: with N replicas an attacker gets at most N times the budget, which is still
far too small to guess a 256-bit unit secret or API token, and slows password guessing to a crawl.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["AuthLimits", "FailureLimiter"]


class FailureLimiter:
    """`blocked(key)` says how long a key must wait once it has `limit` failures inside `window_s`."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = max(1, limit)
        self.window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
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
        with self._lock:
            now = self._clock()
            times = self._recent(key, now)
            over = self._wait(times, now) > 0
            if times is None:
                times = self._failures[key] = deque(maxlen=self.limit)
                if len(self._failures) > self._max_keys:
                    self._failures.popitem(last=False)  # forget the oldest key rather than grow without bound
            self._failures.move_to_end(key)
            times.append(now)
            return self._wait(times, now) if over else 0.0

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))


class AuthLimits:
    """The service's two budgets: failed logins per source and username, and failed credentials of any kind per
    source. Not per username alone: then anyone could lock any account out from anywhere."""

    def __init__(self, per_user: int, per_source: int, window_s: float) -> None:
        self.per_login = FailureLimiter(per_user, window_s)
        self.per_source = FailureLimiter(per_source, window_s)

    @staticmethod
    def login_key(source: str, username: str) -> str:
        return f"{source} {username.lower()}"
