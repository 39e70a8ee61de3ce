"""RateLimiter: a token bucket per key, with a fake clock."""

from __future__ import annotations

import pytest

from turn_service import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.allow("a")
    assert not limiter.allow("a")
    clock.now += 100
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]


def test_keys_are_independent() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock())
    assert limiter.allow("a")
    assert not limiter.allow("a")
    assert limiter.allow("b")
    assert limiter.retry_after("c") == 0.0


def test_refused_requests_do_not_push_the_bucket_negative() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.allow("a")
    for _ in range(50):
        assert not limiter.allow("a")
    clock.now += 1.0
    assert limiter.allow("a")


def test_idle_keys_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2, max_keys=10, clock=clock)
    for i in range(10):
        limiter.allow(f"idle-{i}")
    clock.now += 5  # every idle bucket is full again
    limiter.allow("busy")
    assert len(limiter) == 1
    assert limiter.allow("idle-0") and limiter.allow("idle-0")


def test_busy_keys_are_kept_when_the_table_is_over_its_size() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, max_keys=10, clock=Clock())
    for i in range(25):
        limiter.allow(f"busy-{i}")
    assert len(limiter) == 25
    # busy-0 still has its spent token on record: one more allowed, then refused.
    assert limiter.allow("busy-0") is True
    assert limiter.allow("busy-0") is False


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_invalid_parameters(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)
