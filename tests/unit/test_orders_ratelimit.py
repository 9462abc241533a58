"""The per-user creation rate limit on its own, with a clock the test moves."""

from __future__ import annotations

import pytest

from services.orders.ratelimit import RateLimiter, retry_after_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_user_may_burst_then_is_held_to_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(10, 20, clock=clock)
    assert [limiter.acquire("alice") for _ in range(20)] == [0.0] * 20
    wait = limiter.acquire("alice")
    assert wait == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.acquire("alice") == 0.0
    assert limiter.acquire("alice") > 0


def test_a_refused_attempt_does_not_push_the_next_allowed_one_further() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 1, clock=clock)
    assert limiter.acquire("alice") == 0.0
    for _ in range(50):
        limiter.acquire("alice")
    clock.now += 1.0
    assert limiter.acquire("alice") == 0.0


def test_one_users_flood_leaves_anothers_budget_whole() -> None:
    limiter = RateLimiter(10, 20, clock=Clock())
    for _ in range(100):
        limiter.acquire("mallory")
    assert [limiter.acquire("alice") for _ in range(20)] == [0.0] * 20


def test_the_bucket_refills_only_up_to_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(10, 5, clock=clock)
    clock.now += 3600
    assert [limiter.acquire("alice") for _ in range(5)] == [0.0] * 5
    assert limiter.acquire("alice") > 0


def test_memory_is_bounded_however_many_users_place_orders() -> None:
    clock = Clock()
    limiter = RateLimiter(10, 20, clock=clock, max_keys=100)
    for user in range(1000):
        limiter.acquire(f"user-{user}")
        clock.now += 0.001
    assert len(limiter) <= 100


def test_a_user_still_held_back_keeps_their_bucket_when_idle_ones_are_dropped() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 1, clock=clock, max_keys=3)
    limiter.acquire("idle-1")
    limiter.acquire("idle-2")
    clock.now += 10
    limiter.acquire("mallory")
    limiter.acquire("newcomer")
    assert limiter.acquire("mallory") > 0


@pytest.mark.parametrize(("wait", "header"), [(0.01, 1), (0.99, 1), (1.0, 1), (1.01, 2), (7.5, 8)])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(wait: float, header: int) -> None:
    assert retry_after_seconds(wait) == header


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_a_limiter_that_could_never_allow_anything_is_a_programming_error(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        RateLimiter(rate, burst)
