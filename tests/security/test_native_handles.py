"""Attacks on native refresh handles: guessing, URLs, splicing one user's handle onto another, garbage.

A refresh handle is a bearer secret that lives for as long as its session, so it gets the
attacks a session cookie gets and a few of its own: guessing (throttled per client address
before any handle is looked at), leaking through URLs (refused in query strings), forging
(another user's id or locator spliced in never mints, and never lets a stranger end someone
else's session), and malformed input (a clean 4xx, never a 500).

One cluster of its own with a small guessing budget. Auth trusts loopback as its proxy in the
dev cluster, so a test that speaks to auth directly with ``X-Forwarded-For`` stands for a
client at that address, and each test that spends the budget does so from a fresh address;
through the gateway every client is 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.security.session_helpers import PASSWORD, dedicated_cluster, new_user
from tests.support.http import assert_json_error, bearer, unverified_parts
from tests.support.native import (
    AUTH_PREFIX,
    Handles,
    NativeClient,
    assert_logged_nowhere,
    assert_not_echoed,
    assert_refused,
)
from tests.support.polling import poll
from tests.support.revocation import wait_until_refused

FAILURE_LIMIT, FAILURE_WINDOW, LOGIN_LIMIT, TOKEN_LIMIT = 5, 8, 3, 4
LIMITS = {
    "REFRESH_FAILURE_LIMIT": str(FAILURE_LIMIT),
    "REFRESH_FAILURE_WINDOW_SECONDS": str(FAILURE_WINDOW),
    "LOGIN_ACCOUNT_IP_LIMIT": str(LOGIN_LIMIT),
    # No test here mints more than twice with one session but the one that spends this budget.
    "TOKEN_RATE_LIMIT": str(TOKEN_LIMIT),
    "TOKEN_RATE_WINDOW_SECONDS": "60",
}
ONE_MEGABYTE = 1024 * 1024
_next_address = iter(range(1, 250))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with dedicated_cluster(Path(tmp_path_factory.mktemp("native-handles")), LIMITS) as started:
        yield started


@pytest.fixture(scope="module")
def handles() -> Handles:
    return Handles()


@pytest.fixture
def auth(cluster: Cluster) -> Iterator[httpx.Client]:
    """Auth directly, where X-Forwarded-For from loopback is believed."""
    with httpx.Client(base_url=cluster.service_url("auth"), timeout=10) as http:
        yield http


@pytest.fixture
def gateway(cluster: Cluster, handles: Handles) -> Iterator[NativeClient]:
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        yield NativeClient(http, handles)


def fresh_address() -> str:
    """A client address no other test has used, so each test starts with a full budget."""
    return f"203.0.113.{next(_next_address)}"


def client_at(auth: httpx.Client, handles: Handles, address: str | None = None) -> NativeClient:
    """A native client of auth at ``address`` (a fresh one by default)."""
    return NativeClient(
        auth, handles, prefix=AUTH_PREFIX, headers={"X-Forwarded-For": address or fresh_address()}
    )


def random_handle(user_id: str | None = None) -> str:
    """A guess with the shape of a real handle: a user id, a locator and a secret."""
    owner = user_id or secrets.token_hex(16)
    return f"{owner}.{secrets.token_urlsafe(32)}.{secrets.token_urlsafe(32)}"


def parts(handle: str) -> tuple[str, str, str]:
    """The contract's ``<user id>.<session locator>.<secret>``, which only an attacker takes apart."""
    user_id, locator, secret = handle.split(".")
    return user_id, locator, secret


def retry_after(response: httpx.Response, *presented: str) -> int:
    assert_refused(response, 429, "too_many_requests", *presented)
    value = int(response.headers["retry-after"])
    assert 1 <= value <= FAILURE_WINDOW, value
    return value


def test_guessing_handles_from_one_address_is_throttled_before_any_handle_is_looked_at(
    cluster: Cluster, auth: httpx.Client, gateway: NativeClient, handles: Handles
) -> None:
    owner = client_at(auth, handles)
    victim = owner.login(new_user(cluster), PASSWORD)
    attacker = client_at(auth, handles)
    victim_id = parts(victim)[0]
    for index in range(FAILURE_LIMIT):
        guess = random_handle(victim_id if index % 2 else None)
        assert_refused(attacker.refresh(guess), 401, "invalid_grant", guess)
    retry_after(attacker.refresh(random_handle()))
    # Even the right handle waits, and waiting costs its owner nothing: it was not looked at.
    retry_after(attacker.refresh(victim), victim)
    retry_after(attacker.logout(victim), victim)
    owner.mint(victim)
    # Clients elsewhere, directly or through the gateway, are not affected.
    elsewhere = client_at(auth, handles)
    elsewhere.mint(elsewhere.login(new_user(cluster), PASSWORD))
    gateway.mint(gateway.login(new_user(cluster), PASSWORD))


def test_the_guessing_lockout_ends_with_its_window(
    cluster: Cluster, auth: httpx.Client, handles: Handles
) -> None:
    attacker = client_at(auth, handles)
    for _ in range(FAILURE_LIMIT):
        assert attacker.refresh(random_handle()).status_code == 401
    wait = retry_after(attacker.refresh(random_handle()))
    response = poll(
        lambda: attacker.refresh(random_handle()),
        until=lambda response: response.status_code != 429,
        within=wait + 3,
        what="the guessing lockout to end with its Retry-After",
        every=0.25,
    )
    assert_refused(response, 401, "invalid_grant")


def test_a_detected_theft_spends_the_guessing_budget_too(
    cluster: Cluster, auth: httpx.Client, handles: Handles
) -> None:
    thief = client_at(auth, handles)
    for _ in range(FAILURE_LIMIT):
        first = thief.login(new_user(cluster), PASSWORD)
        thief.mint(thief.mint(first).handle)
        assert_refused(thief.refresh(first), 401, "refresh_reused", first)
    retry_after(thief.refresh(random_handle()))


def test_the_token_budget_holds_for_a_native_session_and_spends_no_guessing_budget(
    cluster: Cluster, auth: httpx.Client, handles: Handles
) -> None:
    client = client_at(auth, handles)
    handle = client.login(new_user(cluster), PASSWORD)
    for _ in range(TOKEN_LIMIT):
        handle = client.mint(handle).handle
    for _ in range(FAILURE_LIMIT + 1):
        refused = client.refresh(handle)
        assert_refused(refused, 429, "too_many_requests", handle)
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Refused without a rotation and without suspicion: the handle is still the session's current
    # one (not reused), and a busy session is no guess, so the address may still refresh others.
    assert_refused(client.refresh(handle), 429, "too_many_requests", handle)
    client.mint(client.login(new_user(cluster), PASSWORD))


@pytest.mark.parametrize("route", ["login", "token", "logout"])
def test_a_query_string_is_refused_on_native_routes_and_never_echoed(
    cluster: Cluster, gateway: NativeClient, route: str
) -> None:
    email = new_user(cluster)
    handle = gateway.login(email, PASSWORD)
    bodies: dict[str, dict[str, Any]] = {
        "login": {"email": email, "password": PASSWORD},
        "token": {"refresh_handle": handle, "audience": "orders"},
        "logout": {"refresh_handle": handle},
    }
    path = f"/auth/native/{route}"
    for query in (f"refresh_handle={handle}", f"handle={handle}&audience=orders", "x=1"):
        for body in (bodies[route], None):
            response = gateway.client.post(f"{path}?{query}", json=body)
            assert_refused(response, 400, "query_not_accepted", handle)
            assert "set-cookie" not in response.headers
    # Nor as a form or a GET, the other ways a handle ends up in a URL or a browser's history.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert_refused(
        gateway.client.post(path, content=f"refresh_handle={handle}", headers=form), 415, None, handle
    )
    assert_refused(gateway.client.get(f"{path}?refresh_handle={handle}"), 405, None, handle)
    # Refused before anything was done: the handle was neither rotated nor ended.
    gateway.mint(handle)


def test_a_handle_of_one_user_never_mints_for_another_however_it_is_spliced(
    cluster: Cluster, auth: httpx.Client, handles: Handles
) -> None:
    alice, bob = client_at(auth, handles), client_at(auth, handles)
    alice_handle = alice.login(new_user(cluster), PASSWORD)
    bob_handle = bob.login(new_user(cluster), PASSWORD)
    alice_id, alice_locator, alice_secret = parts(alice_handle)
    bob_id, bob_locator, bob_secret = parts(bob_handle)
    assert alice_id != bob_id
    forgeries = [
        f"{bob_id}.{alice_locator}.{alice_secret}",  # Alice's handle relabelled as Bob's
        f"{alice_id}.{bob_locator}.{alice_secret}",  # Bob's locator under Alice's id, her secret
        f"{alice_id}.{bob_locator}.{bob_secret}",  # Bob's handle relabelled as Alice's
        f"{bob_id}.{alice_handle}",  # Bob's id in front of Alice's whole handle
        f"{alice_handle}.{bob_id}",
        f"{bob_id}.{alice_secret}.{alice_locator}",
        f"{bob_id}.{alice_locator}.{bob_secret}",
    ]
    for forged in forgeries:
        # From another address each time, so the guessing budget is not what answers.
        response = client_at(auth, handles).refresh(forged)
        assert_refused(response, 401, "invalid_grant", forged, alice_handle, bob_handle)
    # Each real handle mints for its own user only, and no forgery ended either session.
    assert unverified_parts(alice.mint(alice_handle).access_token)[1]["sub"] == alice_id
    assert unverified_parts(bob.mint(bob_handle).access_token)[1]["sub"] == bob_id


def test_another_secret_on_a_users_real_session_never_mints_and_ends_that_session(
    cluster: Cluster, auth: httpx.Client, handles: Handles
) -> None:
    # A session's id (its user id and locator) travels only inside its refresh handles: it is in
    # no token, no listing and no cookie. Whoever presents it with a secret that is not the
    # current one has held an earlier handle of the session, so that is theft, whatever the secret.
    alice, bob = client_at(auth, handles), client_at(auth, handles)
    alice_secret = parts(alice.login(new_user(cluster), PASSWORD))[2]
    bob_handle = bob.login(new_user(cluster), PASSWORD)
    bob_id, bob_locator, _ = parts(bob_handle)
    token = bob.mint(bob_handle)
    forged = f"{bob_id}.{bob_locator}.{alice_secret}"
    assert_refused(client_at(auth, handles).refresh(forged), 401, "refresh_reused", forged, token.handle)
    assert_refused(bob.refresh(token.handle), 401, "invalid_grant", token.handle)
    wait_until_refused(cluster, [token.access_token])


def test_what_anyone_holding_one_of_a_users_tokens_can_forge_neither_mints_nor_ends_the_session(
    cluster: Cluster, auth: httpx.Client, handles: Handles
) -> None:
    # A token travels to every service the user calls; its sub and sid are public to all of them.
    victim = client_at(auth, handles)
    step = victim.mint(victim.login(new_user(cluster), PASSWORD))
    claims = unverified_parts(step.access_token)[1]
    attacker_handle = client_at(auth, handles).login(new_user(cluster), PASSWORD)
    forgeries = [
        f"{claims['sub']}.{claims['sid']}.{secrets.token_urlsafe(32)}",
        f"{claims['sub']}.{claims['sid']}.{parts(attacker_handle)[2]}",
        f"{claims['sub']}.{claims['sid']}.",
        f"{claims['sub']}.{claims['sid']}",
        f"{claims['sub']}.{claims['jti']}.{secrets.token_urlsafe(32)}",
    ]
    for forged in forgeries:
        for response in (client_at(auth, handles).refresh(forged), client_at(auth, handles).logout(forged)):
            assert_refused(response, 401, "invalid_grant", forged, step.handle)
    # The victim's session goes on: a guess at a secret is not evidence that a real handle was copied.
    victim.mint(step.handle)


def test_a_refresh_handle_is_never_a_bearer_token(cluster: Cluster, gateway: NativeClient) -> None:
    handle = gateway.login(new_user(cluster), PASSWORD)
    with httpx.Client(timeout=10) as client:
        for url in (f"{cluster.url}/api/orders", f"{cluster.service_url('orders')}/orders"):
            refused = client.get(url, headers=bearer(handle))
            assert_refused(refused, 401, "invalid_token", handle)
            assert "invalid_token" in refused.headers["www-authenticate"]
            posted = client.post(url, json={"item": "tea", "quantity": 1}, headers=bearer(handle))
            assert_refused(posted, 401, "invalid_token", handle)
    gateway.mint(handle)


# Strings that cannot be a handle. Within the length the contract gives a handle they are 401
# invalid_grant like an unknown handle (and spend the guessing budget); outside it the body's
# declared bounds refuse them as a validation error before any handle is read.
MALFORMED_STRINGS = [
    pytest.param(".", 401, id="one dot"),
    pytest.param("..", 401, id="two dots"),
    pytest.param("." * 130, 401, id="dots only"),
    pytest.param("a.b.c", 401, id="short parts"),
    pytest.param(" " * 130, 401, id="spaces"),
    pytest.param("\u00e9" * 130, 401, id="unicode"),
    pytest.param("\u202e" + "a" * 129, 401, id="bidi override"),
    pytest.param("\x00" * 130, 401, id="NUL bytes"),
    pytest.param("a\r\nX-Injected: 1", 401, id="CRLF"),
    pytest.param("%2e%2e%2f" * 20, 401, id="percent-encoded"),
    pytest.param("\ud800" * 10, 401, id="lone surrogates"),
    pytest.param("", 422, id="empty"),
    pytest.param("A" * 4096, 422, id="4 kB"),
    pytest.param("A" * 60_000, 422, id="60 kB (under the body limit)"),
]


@pytest.mark.parametrize(("value", "status"), MALFORMED_STRINGS)
@pytest.mark.parametrize("route", ["token", "logout"])
def test_a_malformed_handle_string_gets_a_clean_4xx(
    auth: httpx.Client, route: str, value: str, status: int
) -> None:
    body = {"refresh_handle": value, **({"audience": "orders"} if route == "token" else {})}
    # Encoded here, escaping to ASCII: a lone surrogate has no UTF-8 form to send otherwise.
    response = auth.post(
        f"{AUTH_PREFIX}/{route}",
        content=json.dumps(body),
        headers={"Content-Type": "application/json", "X-Forwarded-For": fresh_address()},
    )
    error = assert_json_error(response, status, "invalid_grant" if status == 401 else None)
    assert set(error) == {"error", "detail"}, error
    if len(value.strip()) >= 8:
        assert value not in response.text


@pytest.mark.parametrize(
    ("content", "status"),
    [
        pytest.param(b'{"refresh_handle": 7, "audience": "orders"}', 422, id="number"),
        pytest.param(b'{"refresh_handle": null, "audience": "orders"}', 422, id="null"),
        pytest.param(b'{"refresh_handle": ["x"], "audience": "orders"}', 422, id="list"),
        pytest.param(b'{"refresh_handle": {"a": "b"}, "audience": "orders"}', 422, id="object"),
        pytest.param(b'{"refresh_handle": true, "audience": "orders"}', 422, id="boolean"),
        pytest.param(b'{"refresh_handle": "x", "audience": "orders", "extra": 1}', 422, id="unknown member"),
        pytest.param(
            b'{"refresh_handle": "x", "refresh_handle": "y", "audience": "orders"}', 400, id="twice"
        ),
        pytest.param(b'{"refresh_handle": ', 400, id="truncated JSON"),
        pytest.param(b"\xff\xfe{}", 400, id="not UTF-8"),
        pytest.param(b'"a.b.c"', 400, id="a bare string"),
        pytest.param(
            b'{"refresh_handle": "' + b"A" * ONE_MEGABYTE + b'", "audience": "orders"}', 413, id="1 MB"
        ),
    ],
)
@pytest.mark.parametrize("via", ["gateway", "auth"])
def test_a_malformed_body_gets_a_clean_json_4xx(
    cluster: Cluster, auth: httpx.Client, via: str, content: bytes, status: int
) -> None:
    if via == "gateway":
        url, headers = f"{cluster.url}/auth/native/token", {}
    else:
        url, headers = (
            f"{cluster.service_url('auth')}{AUTH_PREFIX}/token",
            {"X-Forwarded-For": fresh_address()},
        )
    response = auth.post(url, content=content, headers={"Content-Type": "application/json", **headers})
    assert_json_error(response, status)
    assert len(response.content) < 2048


def test_native_login_is_throttled_like_the_cookie_login(
    cluster: Cluster, auth: httpx.Client, handles: Handles
) -> None:
    email, guesser = new_user(cluster), client_at(auth, handles)
    for _ in range(LOGIN_LIMIT):
        assert_refused(guesser.post_login(email, "not-the-password-at-all"), 401, "invalid_credentials")
    refused = guesser.post_login(email, PASSWORD)
    assert_json_error(refused, 429, "too_many_requests")
    assert int(refused.headers["retry-after"]) >= 1
    assert "refresh_handle" not in refused.text
    # The owner, elsewhere, is not locked out.
    client_at(auth, handles).login(email, PASSWORD)


def test_alternating_cookie_and_native_logins_share_one_guessing_budget(
    cluster: Cluster, auth: httpx.Client, handles: Handles
) -> None:
    email, address = new_user(cluster), fresh_address()
    guesser = client_at(auth, handles, address)
    wrong = {"email": email, "password": "not-the-password-at-all"}
    cookie_login = {"Origin": cluster.public_origin, "X-Forwarded-For": address}
    answers = []
    for index in range(LOGIN_LIMIT + 1):
        if index % 2:
            answers.append(guesser.post_login(email, wrong["password"]))
        else:
            answers.append(auth.post("/login", json=wrong, headers=cookie_login))
    assert [answer.status_code for answer in answers] == [401] * LOGIN_LIMIT + [429]
    assert_json_error(auth.post("/login", json={**wrong, "password": PASSWORD}, headers=cookie_login), 429)


def test_no_service_logged_a_refresh_handle(
    cluster: Cluster, gateway: NativeClient, handles: Handles
) -> None:
    # Last in the module: handles went into bodies, query strings and Authorization headers above,
    # and once more here, so that there is something to look for when this test runs alone.
    handle = gateway.login(new_user(cluster), PASSWORD)
    gateway.client.post(f"/auth/native/token?refresh_handle={handle}")
    gateway.client.get("/api/orders", headers=bearer(handle))
    assert_logged_nowhere(cluster, handles.secrets(), ("auth", "gateway", "orders"))
    assert_not_echoed(httpx.get(f"{cluster.service_url('auth')}/metrics", timeout=10), *handles.values)
