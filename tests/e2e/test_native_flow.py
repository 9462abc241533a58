"""Native clients through the gateway: a login gives a refresh handle, each mint rotates it, reuse is theft.

A native client (a phone app, a command line) holds the same server-side session a browser does,
named by an opaque refresh handle that rotates on every mint instead of a cookie. Everything here
goes through real processes: the handle is presented to the gateway, the tokens to orders, and a
session ended by theft, logout or an account operation must be refused there within the
revocation bound. The grace of 0 s and the session timeouts have a cluster of their own, in
``test_native_timeouts.py``.

One cluster for the module. Failed refreshes from one address are throttled, and every client
of the gateway is 127.0.0.1, so the module raises that budget; the security tier attacks it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.security.session_helpers import PASSWORD, SessionApi, login, new_user
from tests.support.cluster import ADMIN, Browser, ClusterFactory, LoggedIn, Secrets, wait_for_log_line
from tests.support.http import SESSION_COOKIE, assert_json_error, bearer, unverified_parts
from tests.support.native import (
    GATEWAY_PREFIX,
    HANDLE_SHAPE,
    Handles,
    NativeClient,
    assert_logged_nowhere,
    assert_not_echoed,
    assert_refused,
    concurrent_refreshes,
    minted,
)
from tests.support.revocation import assert_accepted, feed_listing, wait_until_refused

pytestmark = pytest.mark.e2e

ENV = {"TOKEN_RATE_LIMIT": "1000000", "REFRESH_FAILURE_LIMIT": "1000000"}
ROTATIONS = 50
CONCURRENT = 8
NEW_PASSWORD = "another-long-passphrase-23"
REUSE_METRIC = "auth_refresh_reuse_total"


@pytest.fixture(scope="module")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    with cluster_factory("native", ENV) as started:
        yield started


@pytest.fixture(scope="module")
def handles() -> Handles:
    return Handles()


@pytest.fixture
def native(client: httpx.Client, handles: Handles) -> NativeClient:
    return NativeClient(client, handles)


@pytest.fixture
def api(browser: Browser) -> SessionApi:
    return SessionApi(browser)


def native_sessions(api: SessionApi, viewer: LoggedIn) -> list[dict[str, object]]:
    return [entry for entry in api.sessions(viewer) if entry.get("kind") == "native"]


def sid(token: str) -> str:
    return str(unverified_parts(token)[1]["sid"])


def reuse_count(cluster: Cluster) -> float:
    text = httpx.get(f"{cluster.service_url('auth')}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(REUSE_METRIC) and line[len(REUSE_METRIC)] in " {"
    )


def test_native_login_sets_no_cookie_and_its_handle_mints_a_token_orders_accepts(
    cluster: Cluster, native: NativeClient, browser: Browser, api: SessionApi
) -> None:
    email = new_user(cluster)
    response = native.post_login(email, PASSWORD)
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert set(body["user"]) == {"id", "email", "role"}
    assert (body["user"]["email"], body["user"]["role"]) == (email, "user")
    handle = body["refresh_handle"]
    assert HANDLE_SHAPE.fullmatch(handle)

    response = native.refresh(handle)
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == 300
    first = minted(response, handle)
    created = browser.create_order(first.access_token, item="native tea")
    listed = browser.client.get("/api/orders", headers=bearer(first.access_token))
    assert created["id"] in {order["id"] for order in listed.json()["orders"]}

    # The same claims a browser session's token has, for the same user: orders cannot tell them apart.
    cookie_token = browser.token(login(browser, email))
    header, claims = unverified_parts(first.access_token)
    assert header == unverified_parts(cookie_token)[0]
    assert set(claims) == set(unverified_parts(cookie_token)[1])
    assert (claims["sub"], claims["aud"]) == (body["user"]["id"], "orders")
    # The token names its session by the handle /auth/sessions shows.
    viewer = login(browser, email)
    (entry,) = native_sessions(api, viewer)
    assert entry["handle"] == claims["sid"]
    assert entry["current"] is False
    assert {(s["current"], s["kind"]) for s in api.sessions(viewer)} >= {(True, "browser"), (False, "native")}


def test_native_login_with_a_wrong_password_is_refused(cluster: Cluster, native: NativeClient) -> None:
    response = native.post_login(new_user(cluster), "not-the-password-at-all")
    assert_refused(response, 401, "invalid_credentials")


def test_fifty_rotations_each_give_a_new_handle_and_an_old_one_revokes_the_session(
    cluster: Cluster, native: NativeClient, browser: Browser, api: SessionApi
) -> None:
    email = new_user(cluster)
    chain = [native.login(email, PASSWORD)]
    tokens: list[str] = []
    for _ in range(ROTATIONS):
        step = native.mint(chain[-1])
        chain.append(step.handle)
        tokens.append(step.access_token)
    assert len(set(chain)) == ROTATIONS + 1
    assert len({sid(token) for token in tokens}) == 1, "rotation must keep the session"
    assert_accepted(cluster, tokens[0], tokens[-1])
    viewer = login(browser, email)
    assert len(native_sessions(api, viewer)) == 1
    reused = reuse_count(cluster)

    # The first handle, long rotated away, presented again: someone kept a copy.
    theft = native.refresh(chain[0])
    assert_refused(theft, 401, "refresh_reused", *chain)
    elapsed = wait_until_refused(cluster, [tokens[0], tokens[-1]])
    print(f"\ntheft to refusal at the gateway and orders: {elapsed:.3f} s")

    assert native_sessions(api, viewer) == []
    assert_refused(native.refresh(chain[-1]), 401, "invalid_grant", chain[-1])
    # Every other generation is dead too; none mints again, whatever it is called now.
    for old in chain[1:-1]:
        response = native.refresh(old)
        assert response.status_code == 401, response.text
        assert_not_echoed(response, *chain)
    assert feed_listing(cluster.url, "session", sid(tokens[0])).entries("session", sid(tokens[0]))
    assert reuse_count(cluster) >= reused + 1


def test_a_retry_within_the_grace_gets_the_same_successor_until_the_successor_is_used(
    cluster: Cluster, native: NativeClient, browser: Browser, api: SessionApi
) -> None:
    email = new_user(cluster)
    first = native.login(email, PASSWORD)
    lost = native.mint(first)
    # The answer was lost; the client retries with the handle it still has.
    retried = native.mint(first)
    assert retried.handle == lost.handle
    assert unverified_parts(retried.access_token)[1]["jti"] != unverified_parts(lost.access_token)[1]["jti"]
    assert_accepted(cluster, lost.access_token, retried.access_token)
    viewer = login(browser, email)
    assert len(native_sessions(api, viewer)) == 1

    # The successor is used: the first handle is now a stolen copy, not a retry.
    third = native.mint(lost.handle)
    assert_refused(native.refresh(first), 401, "refresh_reused", first, lost.handle, third.handle)
    wait_until_refused(cluster, [lost.access_token, retried.access_token, third.access_token])
    assert_refused(native.refresh(third.handle), 401, "invalid_grant", third.handle)
    assert native_sessions(api, viewer) == []


@pytest.mark.parametrize("route", ["token", "logout"])
def test_a_handle_two_generations_old_is_theft_even_within_the_grace(
    cluster: Cluster, native: NativeClient, route: str
) -> None:
    first = native.login(new_user(cluster), PASSWORD)
    second = native.mint(first)
    third = native.mint(second.handle)
    # Only the most recently rotated-away handle is a possible retry; a logout with an older one
    # is theft as well, and ends the session all the same.
    stolen = native.refresh(first) if route == "token" else native.logout(first)
    assert_refused(stolen, 401, "refresh_reused", first)
    wait_until_refused(cluster, [second.access_token, third.access_token])
    assert_refused(native.refresh(third.handle), 401, "invalid_grant", third.handle)


def test_concurrent_refreshes_with_one_handle_rotate_it_once_and_all_get_the_same_successor(
    cluster: Cluster, native: NativeClient, browser: Browser, api: SessionApi
) -> None:
    email = new_user(cluster)
    handle = native.login(email, PASSWORD)
    responses = concurrent_refreshes(cluster.url, f"{GATEWAY_PREFIX}/token", handle, CONCURRENT)
    assert [response.status_code for response in responses] == [200] * CONCURRENT, [
        (response.status_code, response.text[:200]) for response in responses
    ]
    answers = [minted(response, handle) for response in responses]
    successors = {answer.handle for answer in answers}
    assert len(successors) == 1, "one handle made more than one branch"
    assert len({answer.access_token for answer in answers}) == CONCURRENT
    for successor in successors:
        native.handles.add(successor)

    # The one successor works and is the session's only future: no stray branch was left live.
    (successor,) = successors
    after = native.mint(successor)
    assert_accepted(cluster, answers[0].access_token, after.access_token)
    viewer = login(browser, email)
    assert len(native_sessions(api, viewer)) == 1


def test_a_session_cookie_is_refused_by_every_native_route(
    cluster: Cluster, native: NativeClient, browser: Browser
) -> None:
    email = new_user(cluster)
    handle = native.login(email, PASSWORD)
    session = login(browser, email)
    cookie = {"Cookie": f"{SESSION_COOKIE}={session.cookie}"}
    assert_refused(native.post_login(email, PASSWORD, cookie), 400, "cookie_not_accepted")
    assert_refused(native.refresh(handle, headers=cookie), 400, "cookie_not_accepted", handle)
    assert_refused(
        native.post("logout", {"refresh_handle": handle}, cookie), 400, "cookie_not_accepted", handle
    )
    # Refused before the handle was looked at: it was neither rotated nor ended.
    native.mint(handle)


def test_a_refresh_handle_is_refused_by_the_cookie_routes(
    cluster: Cluster, native: NativeClient, browser: Browser
) -> None:
    handle = native.login(new_user(cluster), PASSWORD)
    as_cookie = {"Cookie": f"{SESSION_COOKIE}={handle}"}
    as_bearer = bearer(handle)
    unsafe = {"Origin": cluster.public_origin, "X-CSRF-Token": "x" * 43}
    for presented in (as_cookie, as_bearer):
        assert_refused(browser.client.get("/auth/me", headers=presented), 401, "no_session", handle)
        minting = browser.client.post(
            "/auth/token", json={"audience": "orders"}, headers={**presented, **unsafe}
        )
        assert_refused(minting, 401, "no_session", handle)
        logout = browser.client.post("/auth/logout", headers={**presented, **unsafe})
        assert_refused(logout, 401, "no_session", handle)
        assert_refused(browser.client.get("/auth/sessions", headers=presented), 401, "no_session", handle)
    # None of that touched the native session.
    native.mint(handle)


def test_a_browsers_cookie_value_is_not_a_refresh_handle_and_presenting_it_ends_nothing(
    cluster: Cluster, native: NativeClient, browser: Browser, api: SessionApi
) -> None:
    # A signed cookie value is a session id, a dot and a signature: a refresh handle's shape. Its
    # session id is a real one, so with a secret of a handle's length it names a live session; a
    # browser's session has no handle, so that is no handle at all, and no sign of a stolen one.
    session = login(browser, new_user(cluster))
    session_id = session.cookie.rsplit(".", 1)[0]
    for presented in (session.cookie, f"{session_id}.{secrets.token_urlsafe(32)}"):
        assert_refused(native.refresh(presented), 401, "invalid_grant", presented, session.cookie)
        assert_refused(native.logout(presented), 401, "invalid_grant", presented, session.cookie)
    assert api.is_live(session)
    assert_accepted(cluster, browser.token(session))


@pytest.mark.parametrize("operation", ["revoke", "logout-all", "password", "revoke-sessions", "disable"])
def test_account_operations_end_native_sessions_and_refuse_their_tokens(
    cluster: Cluster, native: NativeClient, browser: Browser, api: SessionApi, operation: str
) -> None:
    email = new_user(cluster)
    step = native.mint(native.login(email, PASSWORD))
    assert_accepted(cluster, step.access_token)
    viewer = login(browser, email)
    (entry,) = native_sessions(api, viewer)
    assert entry["handle"] == sid(step.access_token)

    if operation == "revoke":
        assert api.revoke(viewer, str(entry["handle"])).status_code == 204
        assert api.is_live(viewer)
    elif operation == "logout-all":
        assert api.logout_all(viewer).status_code == 204
    elif operation == "password":
        assert api.change_password(viewer, PASSWORD, NEW_PASSWORD).status_code == 200
    else:
        admin = browser.login(ADMIN)
        response = api.admin(admin, api.user_id(admin, email), operation)
        assert response.status_code == 204, response.text

    assert_refused(native.refresh(step.handle), 401, "invalid_grant", step.handle)
    wait_until_refused(cluster, [step.access_token])
    if operation == "password":
        # The owner logs in again with the new password, natively.
        native.mint(native.login(email, NEW_PASSWORD))


def test_native_logout_ends_the_session_and_its_tokens_are_refused(
    cluster: Cluster, native: NativeClient, browser: Browser, api: SessionApi
) -> None:
    email = new_user(cluster)
    step = native.mint(native.login(email, PASSWORD))
    response = native.logout(step.handle)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "logged_out"}
    assert "no-store" in response.headers["cache-control"]
    assert_not_echoed(response, step.handle)
    wait_until_refused(cluster, [step.access_token])
    assert_refused(native.refresh(step.handle), 401, "invalid_grant", step.handle)
    assert_refused(native.logout(step.handle), 401, "invalid_grant", step.handle)
    assert native_sessions(api, login(browser, email)) == []


def test_native_logout_with_the_handle_just_rotated_away_ends_the_session(
    cluster: Cluster, native: NativeClient, browser: Browser, api: SessionApi
) -> None:
    # Within the grace and before its successor is used, the old handle may be a retry of a mint
    # whose answer was lost: the client never saw the new handle and logs out with the one it has.
    email = new_user(cluster)
    first = native.login(email, PASSWORD)
    lost = native.mint(first)
    response = native.logout(first)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "logged_out"}
    wait_until_refused(cluster, [lost.access_token])
    assert_refused(native.refresh(lost.handle), 401, "invalid_grant", lost.handle)
    assert native_sessions(api, login(browser, email)) == []


def test_bad_native_requests_get_a_json_4xx(cluster: Cluster, native: NativeClient) -> None:
    handle = native.login(new_user(cluster), PASSWORD)
    assert_refused(native.refresh(handle, audience="billing"), 400, "invalid_audience", handle)
    assert_refused(native.refresh("no-such-handle"), 401, "invalid_grant")
    assert_refused(native.logout("no-such-handle"), 401, "invalid_grant")
    for body in (
        {},
        {"refresh_handle": handle},
        {"audience": "orders"},
        {"refresh_handle": 7, "audience": "orders"},
    ):
        response = native.post("token", body)
        assert_json_error(response, 422)
        assert_not_echoed(response, handle)
    # None of those moved the session on.
    native.mint(handle)


def test_a_theft_is_logged_as_a_warning_and_no_service_logged_a_refresh_handle(
    cluster: Cluster, native: NativeClient, handles: Handles, secrets_seen: Secrets
) -> None:
    # Last in the module, so that every handle its tests were given is looked for in everything
    # every process wrote; this test's own theft makes sure there is something to look at.
    first = native.login(new_user(cluster), PASSWORD)
    step = native.mint(first)
    native.mint(step.handle)
    assert_refused(native.refresh(first), 401, "refresh_reused", first)
    warning = wait_for_log_line(
        cluster,
        "auth",
        lambda entry: entry.get("level") == "warning" and sid(step.access_token) in str(entry.get("msg")),
    )
    assert first not in str(warning)
    assert_logged_nowhere(cluster, handles.secrets(), ("auth", "gateway", "orders"))
    for handle in handles.values:
        secrets_seen.add(handle)
