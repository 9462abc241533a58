"""Login and token throttling under attack, on a cluster of its own with small budgets.

Auth trusts loopback as its proxy in the dev cluster, so a test that speaks to auth directly
with ``X-Forwarded-For`` stands for a client at that address; the attacks from many addresses
are built that way. Through the gateway every client here is 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from deploy.devcluster import Cluster
from tests.security.session_helpers import PASSWORD, dedicated_cluster, login, new_user
from tests.support.cluster import Browser, Secrets
from tests.support.http import assert_json_error
from tests.support.polling import poll

IP_LIMIT, ACCOUNT_IP_LIMIT, ACCOUNT_LIMIT, WINDOW, TOKEN_LIMIT = 6, 3, 5, 15, 5
LIMITS = {
    "LOGIN_IP_LIMIT": str(IP_LIMIT),
    "LOGIN_ACCOUNT_IP_LIMIT": str(ACCOUNT_IP_LIMIT),
    "LOGIN_ACCOUNT_LIMIT": str(ACCOUNT_LIMIT),
    "LOGIN_THROTTLE_WINDOW_SECONDS": str(WINDOW),
    "TOKEN_RATE_LIMIT": str(TOKEN_LIMIT),
    "TOKEN_RATE_WINDOW_SECONDS": "60",
}
WRONG = "not-the-password-at-all"
_next_address = iter(range(1, 250))


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with dedicated_cluster(Path(tmp_path_factory.mktemp("throttled")), LIMITS) as cluster:
        yield cluster


@pytest.fixture
def auth(throttled: Cluster) -> Iterator[httpx.Client]:
    """Auth directly, where X-Forwarded-For from loopback is believed."""
    with httpx.Client(base_url=throttled.service_url("auth"), timeout=10) as http:
        yield http


@pytest.fixture
def gateway(throttled: Cluster, secrets_seen: Secrets) -> Iterator[Browser]:
    with httpx.Client(base_url=throttled.url, timeout=10) as http:
        yield Browser(throttled, http, secrets_seen)


def fresh_address() -> str:
    """A client address no other test has used, so each test starts with full budgets."""
    return f"198.51.100.{next(_next_address)}"


def attempt(auth: httpx.Client, cluster: Cluster, ip: str, email: str, password: str) -> httpx.Response:
    return auth.post(
        "/login",
        json={"email": email, "password": password},
        headers={"Origin": cluster.public_origin, "X-Forwarded-For": ip},
    )


def retry_after(response: httpx.Response) -> int:
    assert_json_error(response, 429, "too_many_requests")
    value = int(response.headers["retry-after"])
    assert 1 <= value <= WINDOW
    return value


def test_password_guessing_one_account_from_one_address_gets_429_with_retry_after(
    throttled: Cluster, gateway: Browser, auth: httpx.Client
) -> None:
    email = new_user(throttled)
    for _ in range(ACCOUNT_IP_LIMIT):
        assert_json_error(gateway.post_login(email, WRONG), 401, "invalid_credentials")
    refused = gateway.post_login(email, WRONG)
    retry_after(refused)
    assert "set-cookie" not in refused.headers
    # Even the right password waits: a throttled request is answered before any password check.
    retry_after(gateway.post_login(email, PASSWORD))
    # The owner, elsewhere, is not locked out.
    assert attempt(auth, throttled, fresh_address(), email, PASSWORD).status_code == 200


def test_account_enumeration_known_and_unknown_emails_are_throttled_alike(
    throttled: Cluster, auth: httpx.Client
) -> None:
    known, unknown = new_user(throttled), "no-such-user@example.com"
    known_ip, unknown_ip = fresh_address(), fresh_address()
    pairs = [
        (
            attempt(auth, throttled, known_ip, known, WRONG),
            attempt(auth, throttled, unknown_ip, unknown, WRONG),
        )
        for _ in range(ACCOUNT_IP_LIMIT + 2)
    ]
    assert [k.status_code for k, _ in pairs] == [401] * ACCOUNT_IP_LIMIT + [429, 429]
    ignored = {"date", "x-request-id", "retry-after"}
    for for_known, for_unknown in pairs:
        assert for_known.status_code == for_unknown.status_code
        assert for_known.json() == for_unknown.json()
        assert {k: v for k, v in for_known.headers.items() if k not in ignored} == {
            k: v for k, v in for_unknown.headers.items() if k not in ignored
        }
        if for_known.status_code == 429:
            # Both windows opened within moments of each other; a second boundary may fall between.
            assert abs(retry_after(for_known) - retry_after(for_unknown)) <= 1


def test_password_spraying_from_one_address_hits_the_per_address_budget(
    throttled: Cluster, auth: httpx.Client
) -> None:
    sprayer, victim = fresh_address(), new_user(throttled)
    for index in range(IP_LIMIT):
        response = attempt(auth, throttled, sprayer, f"sprayed-{index}@example.com", WRONG)
        assert_json_error(response, 401, "invalid_credentials")
    retry_after(attempt(auth, throttled, sprayer, "one-more@example.com", WRONG))
    retry_after(attempt(auth, throttled, sprayer, victim, PASSWORD))
    assert attempt(auth, throttled, fresh_address(), victim, PASSWORD).status_code == 200


def test_distributed_guessing_cannot_lock_the_owner_out(throttled: Cluster, auth: httpx.Client) -> None:
    victim = new_user(throttled)
    attackers = [fresh_address() for _ in range(3)]
    # Five failures from three addresses, none past its own per-address budget of three.
    for ip, failures in zip(attackers, (2, 2, 1), strict=True):
        for _ in range(failures):
            assert attempt(auth, throttled, ip, victim, WRONG).status_code == 401
    # The account is under attack: every address that failed on it waits ...
    for ip in attackers:
        retry_after(attempt(auth, throttled, ip, victim, WRONG))
    # ... a new address gets a single guess ...
    newcomer = fresh_address()
    assert attempt(auth, throttled, newcomer, victim, WRONG).status_code == 401
    retry_after(attempt(auth, throttled, newcomer, victim, WRONG))
    # ... and the owner, who has not failed from their own address, logs in.
    assert attempt(auth, throttled, fresh_address(), victim, PASSWORD).status_code == 200


def test_lockout_is_bounded_it_ends_with_its_window_and_no_counter_outlives_one(
    throttled: Cluster, auth: httpx.Client
) -> None:
    email, ip = new_user(throttled), fresh_address()
    for _ in range(ACCOUNT_IP_LIMIT):
        attempt(auth, throttled, ip, email, WRONG)
    wait = retry_after(attempt(auth, throttled, ip, email, PASSWORD))
    with redis.Redis.from_url(throttled.service_url("redis")) as client:
        ttls = [client.ttl(key) for key in client.scan_iter(match="throttle:*")]
    # Every counter expires within its window (-1 would be one that never does); -2 is one
    # that expired between the scan and the question, as earlier tests' windows end.
    assert ttls
    assert all(ttl == -2 or 0 < ttl <= 60 for ttl in ttls), ttls
    # Polled, not slept: the right password works again once Retry-After has passed.
    response = poll(
        lambda: attempt(auth, throttled, ip, email, PASSWORD),
        until=lambda response: response.status_code != 429,
        within=wait + 3,
        what="the lockout to end with its Retry-After",
        every=0.25,
    )
    assert response.status_code == 200


def test_token_minting_is_rate_limited_per_session(throttled: Cluster, gateway: Browser) -> None:
    email = new_user(throttled)
    session, other = login(gateway, email), login(gateway, email)
    for _ in range(TOKEN_LIMIT):
        assert gateway.request_token(session).status_code == 200
    refused = gateway.request_token(session)
    assert_json_error(refused, 429, "too_many_requests")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "access_token" not in refused.text
    # The budget is the session's own.
    assert gateway.request_token(other).status_code == 200
