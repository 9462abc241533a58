"""Revocation reaches tokens already minted: every critical operation, through real processes.

A token minted before the operation is refused afterwards at the gateway and at orders, whether
or not a verifier had already verified (and remembered) it; tokens the operation does not cover
keep working; two auth replicas share the set; the set outlives restarts of auth and Redis (and
expires with the tokens it covers: test_key_rotation.py); a verifier whose feed is unreachable
keeps its last good copy, then fails closed; and orders and the gateway never talk to Redis.

One cluster for the whole module (its start is most of the module's cost); the tests that stop
processes come last.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.security.session_helpers import PASSWORD, SessionApi, login, new_user
from tests.support.cluster import BOB, Browser, ClusterFactory, LoggedIn
from tests.support.http import SESSION_COOKIE, assert_json_error, bearer, session_cookie, unverified_parts
from tests.support.polling import poll
from tests.support.revocation import (
    FEED_PATH,
    REFUSED_WITHIN,
    RedisWatch,
    assert_accepted,
    feed_listing,
    read_feed,
    wait_until_refused,
    watching_redis_connections,
)

pytestmark = pytest.mark.e2e

# The contract: a cutoff covers every token its session minted, and lives as long as one of them
# could (token lifetime + the largest allowed leeway). The shortest lifetime auth allows makes an
# entry live 60 s; test_key_rotation.py, whose cluster has that lifetime too and runs most of a
# minute anyway, sees one expire.
TOKEN_TTL = 30
MAX_LEEWAY = 30
# After this long without a good refresh a verifier stops trusting its copy of the feed. It must
# exceed a long-poll's wait plus the fetch timeout (3 s), so the wait is short here too.
MAX_STALE = 8
ENV = {
    "ACCESS_TOKEN_TTL_SECONDS": str(TOKEN_TTL),
    "REVOCATIONS_MAX_STALE_SECONDS": str(MAX_STALE),
    "REVOCATIONS_WAIT_SECONDS": "1",
    "KEYS_RELOAD_SECONDS": "0.2",
    "TOKEN_RATE_LIMIT": "1000000",
}
NEW_PASSWORD = "another-long-passphrase-2"
CACHE_HITS = 'tokens_verified_from_cache_total{audience="orders"}'
REFUSED_AS_REVOKED = 'tokens_rejected_total{audience="orders",reason="revoked"}'


@pytest.fixture(scope="module")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    # Two replicas: an operation lands on either, and the verifiers read the feed from the first.
    with cluster_factory("revocation", ENV, auth_replicas=2) as started:
        yield started


@pytest.fixture(scope="module")
def redis_watch(cluster: Cluster) -> Iterator[RedisWatch]:
    """Every process's connections sampled for as long as this module's tests run."""
    with watching_redis_connections(cluster) as watch:
        yield watch


@pytest.fixture(autouse=True)
def _watched(redis_watch: RedisWatch) -> None:
    """Every test runs under the module's Redis watch."""


@pytest.fixture(scope="module")
def shared_user(cluster: Cluster) -> str:
    """A user for the tests that end one session at a time, which never touch another."""
    return new_user(cluster)


def tokens(browser: Browser, session: LoggedIn, count: int = 2) -> list[str]:
    """``count`` tokens of ``session``; the first is used once, so both verifiers remember it."""
    minted = [browser.token(session) for _ in range(count)]
    assert_accepted(browser.cluster, minted[0])
    return minted


def sid(token: str) -> str:
    return str(unverified_parts(token)[1]["sid"])


def orders_metric(cluster: Cluster, sample: str) -> float:
    """One sample of orders' metrics, e.g. ``tokens_rejected_total{audience="orders",reason="revoked"}``."""
    text = httpx.get(f"{cluster.service_url('orders')}/metrics", timeout=10).text
    found = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(sample + " ")]
    return float(found[0]) if found else 0.0


def test_a_logout_refuses_the_sessions_tokens_and_spares_another_session_of_the_user(
    cluster: Cluster, browser: Browser, shared_user: str
) -> None:
    leaving, staying = login(browser, shared_user), login(browser, shared_user)
    revoked, kept = tokens(browser, leaving), tokens(browser, staying)
    # The first token is in orders' verified-token memory: a second use is a hit.
    hits = orders_metric(cluster, CACHE_HITS)
    assert_accepted(cluster, revoked[0])
    assert orders_metric(cluster, CACHE_HITS) > hits
    refused = orders_metric(cluster, REFUSED_AS_REVOKED)

    assert browser.logout(leaving).status_code == 200
    wait_until_refused(cluster, revoked)

    assert orders_metric(cluster, REFUSED_AS_REVOKED) >= refused + len(revoked)

    assert_accepted(cluster, *kept, browser.token(staying))


def test_revoking_one_session_refuses_its_tokens_only(
    cluster: Cluster, browser: Browser, shared_user: str
) -> None:
    api = SessionApi(browser)
    phone, laptop = login(browser, shared_user), login(browser, shared_user)
    revoked, kept = tokens(browser, phone), tokens(browser, laptop)

    assert api.revoke(laptop, api.current_handle(phone)).status_code == 204
    wait_until_refused(cluster, revoked)

    assert_accepted(cluster, *kept)


def test_logging_out_everywhere_refuses_every_session_of_the_user_and_no_one_elses(
    cluster: Cluster, browser: Browser
) -> None:
    api = SessionApi(browser)
    email = new_user(cluster)
    sessions = [login(browser, email) for _ in range(2)]
    revoked = [token for session in sessions for token in tokens(browser, session)]
    bystander = tokens(browser, browser.login(BOB))

    assert api.logout_all(sessions[0]).status_code == 204
    wait_until_refused(cluster, revoked)

    assert_accepted(cluster, *bystander)


def test_a_password_change_refuses_the_other_sessions_and_keeps_the_current_one(
    cluster: Cluster, browser: Browser
) -> None:
    api = SessionApi(browser)
    email = new_user(cluster)
    current, other = login(browser, email), login(browser, email)
    kept, revoked = tokens(browser, current), tokens(browser, other)

    changed = api.change_password(current, PASSWORD, NEW_PASSWORD)
    assert changed.status_code == 200, changed.text
    wait_until_refused(cluster, revoked)

    # The session that changed the password goes on, with the tokens it had and new ones.
    renewed = LoggedIn(
        email=email, cookie=session_cookie(changed).value, csrf_token=changed.json()["csrf_token"], user={}
    )
    assert_accepted(cluster, *kept, browser.token(renewed))


@pytest.mark.parametrize("action", ["revoke-sessions", "disable"])
def test_an_admin_action_refuses_every_token_of_the_user(
    cluster: Cluster, browser: Browser, action: str
) -> None:
    api = SessionApi(browser)
    admin = browser.login("admin@example.com")
    email = new_user(cluster)
    revoked = [
        token
        for session in (login(browser, email), login(browser, email))
        for token in tokens(browser, session)
    ]
    bystander = tokens(browser, browser.login(BOB))

    assert api.admin(admin, api.user_id(admin, email), action).status_code == 204
    wait_until_refused(cluster, revoked)

    assert_accepted(cluster, *bystander)
    if action == "disable":
        assert api.admin(admin, api.user_id(admin, email), "enable").status_code == 204


def test_the_feed_is_signed_public_and_carries_the_documented_cutoff(
    cluster: Cluster, browser: Browser, shared_user: str
) -> None:
    session = login(browser, shared_user)
    token = browser.token(session)
    iat = int(unverified_parts(token)[1]["iat"])
    before_logout = read_feed(cluster.url)

    started = time.time()
    assert browser.logout(session).status_code == 200

    # Through the gateway (as the discovery document names it) and from either replica.
    for base in (cluster.url, *cluster.auth_urls()):
        feed = feed_listing(base, "session", sid(token))
        assert feed.claims["iss"] == cluster.public_origin
        assert feed.claims["epoch"] == before_logout.claims["epoch"]
        assert feed.claims["version"] > before_logout.claims["version"]
        assert feed.etag == f'"{feed.claims["epoch"]}.{feed.claims["version"]}"'
        (entry,) = feed.entries("session", sid(token))
        # floor(now) + 1 at auth: every token minted in the operation's second or before.
        assert iat < entry["before"] <= int(time.time()) + 1
        assert entry["before"] >= int(started)
        assert entry["until"] == entry["before"] + TOKEN_TTL + MAX_LEEWAY
        # A verifier drops expired entries itself, but auth serves none.
        assert all(each["until"] > feed.claims["iat"] for each in feed.claims["entries"])
    discovery = httpx.get(f"{cluster.url}/.well-known/openid-configuration", timeout=10).json()
    assert discovery["revocations_uri"] == f"{cluster.public_origin}{FEED_PATH}"


def test_the_feed_answers_304_to_its_etag_and_holds_a_long_poll_until_a_change(
    cluster: Cluster, browser: Browser, shared_user: str
) -> None:
    first, second = cluster.auth_urls()
    feed = read_feed(first)
    unchanged = httpx.get(f"{first}{FEED_PATH}", headers={"If-None-Match": feed.etag}, timeout=10)
    assert unchanged.status_code == 304
    assert unchanged.headers["etag"] == feed.etag
    assert unchanged.content == b""

    # A long-poll on the first replica learns of a logout made on the second.
    session = login(browser, shared_user)
    token = browser.token(session)
    with httpx.Client(timeout=30) as client:
        waiting = client.build_request(
            "GET", f"{first}{FEED_PATH}", headers={"If-None-Match": feed.etag, "Prefer": "wait=20"}
        )
        answered: list[tuple[float, httpx.Response]] = []
        thread = threading.Thread(target=lambda: answered.append((time.monotonic(), client.send(waiting))))
        thread.start()
        time.sleep(0.3)  # the long-poll is in flight; nothing observable says so
        logged_out = httpx.post(
            f"{second}/logout",
            headers={
                "Cookie": f"{SESSION_COOKIE}={session.cookie}",
                "Origin": cluster.public_origin,
                "X-CSRF-Token": session.csrf_token,
            },
            timeout=10,
        )
        at = time.monotonic()
        assert logged_out.status_code == 200, logged_out.text
        thread.join(timeout=25)
    (when, response) = answered[0]
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=20"
    assert response.headers["etag"] != feed.etag
    assert when - at < 1.0
    wait_until_refused(cluster, [token])


def test_the_typical_delay_from_logout_to_refusal_is_about_a_second(
    cluster: Cluster, browser: Browser, shared_user: str
) -> None:
    delays = []
    for _ in range(5):
        session = login(browser, shared_user)
        token = tokens(browser, session, count=1)
        assert browser.logout(session).status_code == 200
        delays.append(wait_until_refused(cluster, token))
    # Generous for a loaded 2-core machine; the bench measures p50 and p99 over hundreds.
    assert statistics.median(delays) <= 1.5, delays
    assert max(delays) <= REFUSED_WITHIN, delays


def test_a_key_compromise_drill_refuses_every_token_the_key_signed(
    cluster: Cluster, browser: Browser, shared_user: str
) -> None:
    session = login(browser, shared_user)
    revoked = tokens(browser, session)
    (compromised,) = {unverified_parts(token)[0]["kid"] for token in revoked}
    rotated = cluster.auth_cli("keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr

    drill = cluster.auth_cli("keys", "revoke", compromised)
    assert drill.returncode == 0, drill.stderr
    wait_until_refused(cluster, revoked)

    # The successor signs from now on, and its tokens (and the feed) verify.
    def fresh_token() -> str | None:
        token = browser.token(session)
        return token if unverified_parts(token)[0]["kid"] != compromised else None

    token = poll(fresh_token, within=REFUSED_WITHIN, what="a token signed by the successor key")
    assert_accepted(cluster, token)
    feed = read_feed(cluster.url)
    assert feed.kid != compromised
    assert feed.entries("key", compromised)


def orders_revocations(cluster: Cluster) -> tuple[int, dict[str, Any]]:
    """Orders' readiness and its revocation check."""
    response = httpx.get(f"{cluster.service_url('orders')}/readyz", timeout=5)
    status: dict[str, Any] = response.json()["checks"]["revocations"]
    return response.status_code, status


def revoked_token(cluster: Cluster, browser: Browser, email: str) -> str:
    """A token whose session has logged out, refused everywhere."""
    session = login(browser, email)
    token = browser.token(session)
    assert_accepted(cluster, token)
    assert browser.logout(session).status_code == 200
    wait_until_refused(cluster, [token])
    return token


def restart_verifiers(cluster: Cluster) -> None:
    """Fresh orders and gateway processes: nothing remembered, the feed read anew."""
    for name in ("gateway", "orders"):
        cluster.stop_service(name)
    cluster.start_service("orders")
    cluster.start_service("gateway")


@pytest.mark.parametrize("restarted", ["auth", "redis"])
def test_the_set_survives_a_restart(
    cluster: Cluster, browser: Browser, shared_user: str, restarted: str
) -> None:
    token = revoked_token(cluster, browser, shared_user)
    handle = str(unverified_parts(token)[1]["sid"])
    (entry,) = feed_listing(cluster.url, "session", handle).entries("session", handle)
    epoch = read_feed(cluster.url).claims["epoch"]

    cluster.stop_service(restarted)
    cluster.start_service(restarted)

    # Auth serves the same set (same epoch, so verifiers holding it see no replay or reset) ...
    feed = poll(
        lambda: read_feed(cluster.url),
        within=15,
        what="the feed again",
        ignoring=(AssertionError, httpx.HTTPError),
    )
    assert feed.claims["epoch"] == epoch
    assert entry in feed.entries("session", entry["id"])
    # ... and verifiers that never saw the revocation learn it from there.
    restart_verifiers(cluster)
    wait_until_refused(cluster, [token])


def test_an_unreachable_feed_keeps_the_last_good_one_then_fails_closed(
    cluster: Cluster, browser: Browser, client: httpx.Client, shared_user: str
) -> None:
    revoked = revoked_token(cluster, browser, shared_user)
    session = login(browser, shared_user)
    live = browser.token(session)
    assert orders_revocations(cluster)[0] == 200

    cluster.stop_service("auth")
    try:
        # Within the stale bound: the last good feed still applies, both ways.
        assert client.get("/api/orders", headers=bearer(live)).status_code == 200
        assert_json_error(client.get("/api/orders", headers=bearer(revoked)), 401, "invalid_token")
        direct = httpx.get(f"{cluster.service_url('orders')}/orders", headers=bearer(live), timeout=10)
        assert direct.status_code == 200

        # Past it: not ready, and 503 for every token rather than accept one revoked meanwhile.
        poll(lambda: orders_revocations(cluster)[0] == 503, within=MAX_STALE + 10, what="orders not ready")
        _, status = orders_revocations(cluster)
        assert status["ready"] is False, status
        for token in (live, revoked):
            assert_json_error(
                httpx.get(f"{cluster.service_url('orders')}/orders", headers=bearer(token)), 503
            )
        poll(
            lambda: client.get("/api/orders", headers=bearer(live)).status_code == 503,
            within=MAX_STALE + 10,
            what="the gateway failing closed",
        )
    finally:
        cluster.start_service("auth")
    poll(lambda: orders_revocations(cluster)[0] == 200, within=15, what="orders ready again")
    # A new token: the one from before may have outlived its 30 s by now.
    live = browser.token(session)
    poll(
        lambda: client.get("/api/orders", headers=bearer(live)).status_code == 200,
        within=15,
        what="the gateway accepting again",
    )
    assert_json_error(client.get("/api/orders", headers=bearer(revoked)), 401, "invalid_token")


def test_orders_and_the_gateway_never_opened_a_connection_to_redis(redis_watch: RedisWatch) -> None:
    """Last in the module: the watch has sampled through every test above, restarts included."""
    redis_watch.assert_verifiers_never_connected()
