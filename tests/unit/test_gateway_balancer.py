"""The balancer's rules: round robin over healthy origins, exclusion on retry, pools of one, settings."""

from __future__ import annotations

import pytest

from services.gateway.balancer import Pool, may_retry_after_send, pools
from services.gateway.settings import GatewaySettings
from shared.core import SettingsError

A, B, C = "http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def picks(pool: Pool, count: int) -> list[str | None]:
    return [member.url if (member := pool.choose()) else None for _ in range(count)]


def test_origins_take_turns_in_order() -> None:
    assert picks(Pool("auth", [A, B, C]), 6) == [A, B, C, A, B, C]


def test_an_origin_marked_down_is_skipped_until_marked_up() -> None:
    pool = Pool("auth", [A, B, C])
    assert pool.mark_down(B, "connect", "connection failed")

    assert picks(pool, 4) == [A, C, A, C]
    assert pool.mark_up(B)
    assert set(picks(pool, 3)) == {A, B, C}


def test_marking_is_reported_only_when_the_state_changes() -> None:
    pool = Pool("auth", [A, B])

    assert pool.mark_down(A, "health_check", "HTTP 503")
    assert not pool.mark_down(A, "connect", "refused")
    assert pool.member(A).marked_down == {"health_check": 1}
    assert pool.member(A).reason == "refused"
    assert not pool.mark_up(B)
    assert pool.mark_up(A)
    assert pool.member(A).reason is None


def test_a_retry_never_goes_back_to_the_origin_it_came_from() -> None:
    pool = Pool("auth", [A, B])
    first = pool.choose()
    assert first is not None

    second = pool.choose(exclude=[first.url])

    assert second is not None
    assert second.url != first.url
    assert pool.choose(exclude=[A, B]) is None


def test_a_balanced_pool_with_every_origin_down_has_nothing_to_offer() -> None:
    pool = Pool("auth", [A, B])
    pool.mark_down(A, "connect", "refused")
    pool.mark_down(B, "health_check", "HTTP 503")

    assert pool.choose() is None
    assert not pool.available
    assert pool.status()["available"] is False


def test_a_pool_of_one_is_always_tried_even_when_marked_down() -> None:
    pool = Pool("orders", [A])
    pool.mark_down(A, "connect", "refused")

    assert pool.available
    assert picks(pool, 2) == [A, A]
    assert pool.status()["members"][0]["healthy"] is False
    assert pool.choose(exclude=[A]) is None


def test_status_says_how_long_an_origin_has_been_in_its_state() -> None:
    clock = FakeClock()
    pool = Pool("auth", [A, B], clock=clock)
    clock.now += 5
    pool.mark_down(B, "connect", "connection failed: ConnectError")
    clock.now += 2.5

    members = {member["url"]: member for member in pool.status()["members"]}

    assert members[A] == {"url": A, "healthy": True, "for_seconds": 7.5, "reason": None}
    assert members[B] == {
        "url": B,
        "healthy": False,
        "for_seconds": 2.5,
        "reason": "connection failed: ConnectError",
    }


@pytest.mark.parametrize("urls", [[], [A, A]])
def test_a_pool_needs_distinct_origins(urls: list[str]) -> None:
    with pytest.raises(ValueError, match="auth"):
        Pool("auth", urls)


def test_retries_are_counted_by_cause() -> None:
    pool = pools({"auth": [A, B]})["auth"]
    pool.count_retry("connect")
    pool.count_retry("connect")
    pool.count_retry("after_send")

    assert pool.retries == {"connect": 2, "after_send": 1}


@pytest.mark.parametrize(
    ("method", "allowed"),
    [("GET", True), ("head", True), ("POST", False), ("PUT", False), ("PATCH", False), ("DELETE", False)],
)
def test_only_safe_methods_are_sent_again_after_they_may_have_arrived(method: str, allowed: bool) -> None:
    assert may_retry_after_send(method) is allowed


def test_one_origin_per_upstream_by_default() -> None:
    settings = GatewaySettings.from_env({})

    assert settings.upstream_urls() == {
        "auth": ("http://127.0.0.1:8001",),
        "orders": ("http://127.0.0.1:8002",),
    }
    assert settings.upstream_health_interval == 2.0


def test_several_origins_are_read_in_order_as_origins() -> None:
    settings = GatewaySettings.from_env(
        {"AUTH_URL": f" {A}/ , {B} ,{C}", "ORDERS_URL": A, "UPSTREAM_HEALTH_INTERVAL_SECONDS": "0.5"}
    )

    assert settings.upstream_urls()["auth"] == (A, B, C)
    assert settings.upstream_urls()["orders"] == (A,)
    assert settings.upstream_health_interval == 0.5


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AUTH_URL", f"{A},{B}/prefix", "without path"),
        ("ORDERS_URL", f"{A},ftp://127.0.0.1", "http"),
        ("AUTH_URL", f"{A},{A}/", "same origin twice"),
        ("UPSTREAM_HEALTH_INTERVAL_SECONDS", "0", ">= 0.1"),
    ],
)
def test_a_bad_upstream_list_is_refused_by_name(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=variable) as caught:
        GatewaySettings.from_env({variable: value})
    assert message in str(caught.value)
