"""The failed-authentication limiter: a sliding window per key, bounded memory."""

from __future__ import annotations

from fleet_service.auth.rate_limits import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_blocked_after_limit_failures_until_the_oldest_leaves_the_window():
    clock = Clock()
    limiter = FailureLimiter(3, 60.0, clock=clock)
    for _ in range(3):
        assert limiter.blocked("ip") == 0
        limiter.fail("ip")
        clock.now += 10  # failures at 1000, 1010, 1020
    assert limiter.blocked("other") == 0
    assert limiter.blocked("ip") == 30.0  # the first failure (1000) leaves the window at 1060; now is 1030
    clock.now = 1059.5
    assert 0 < limiter.blocked("ip") <= 0.5
    clock.now = 1060.0
    assert limiter.blocked("ip") == 0  # two failures left in the window: one more try
    limiter.fail("ip")
    assert limiter.blocked("ip") == 10.0  # until 1010 + 60


def test_reset_forgets_and_memory_stays_bounded():
    clock = Clock()
    limiter = FailureLimiter(1, 60.0, max_keys=100, clock=clock)
    limiter.fail("user")
    assert limiter.blocked("user") > 0
    limiter.reset("user")
    assert limiter.blocked("user") == 0
    for i in range(1000):
        limiter.fail(f"spray-{i}")
    assert len(limiter._failures) <= 101
    assert limiter.blocked("spray-999") > 0  # the newest keys are kept, the oldest forgotten
    assert FailureLimiter.retry_after(0.2) == "1" and FailureLimiter.retry_after(30.0) == "30"
