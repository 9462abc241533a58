"""Revocations outlive restarts of auth and Redis, expire with the tokens they cover, and a verifier
whose feed is unreachable follows the documented policy: last good feed, then not ready and 503."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.security.session_helpers import login, new_user
from tests.support.cluster import Browser, ClusterFactory, Secrets
from tests.support.http import assert_json_error, bearer, unverified_parts
from tests.support.polling import poll
from tests.support.revocation import (
    RedisWatch,
    assert_accepted,
    read_feed,
    wait_until_refused,
    watching_redis_connections,
)

pytestmark = pytest.mark.e2e

# The shortest token lifetime auth allows: an entry then lives 30 + 30 (the largest leeway) s,
# short enough for this module to see one expire while its other tests run.
TOKEN_TTL = 30
MAX_LEEWAY = 30
# After this long without a good refresh a verifier stops trusting its copy of the feed; it must
# exceed a long-poll's wait plus the fetch timeout (3 s), so the wait is short here too.
MAX_STALE = 6
ENV = {
    "ACCESS_TOKEN_TTL_SECONDS": str(TOKEN_TTL),
    "REVOCATIONS_MAX_STALE_SECONDS": str(MAX_STALE),
    "REVOCATIONS_WAIT_SECONDS": "2",
    "TOKEN_RATE_LIMIT": "1000000",
}


@pytest.fixture(scope="module")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    with cluster_factory("revocation-outages", ENV) as started:
        yield started


@pytest.fixture(scope="module")
def redis_watch(cluster: Cluster) -> Iterator[RedisWatch]:
    with watching_redis_connections(cluster) as watch:
        yield watch


@dataclass(frozen=True)
class Early:
    """A revocation made as the module starts, for its last test to see expire."""

    sid: str
    entry: dict[str, Any]


@pytest.fixture(scope="module")
def early(cluster: Cluster, redis_watch: RedisWatch, secrets_seen: Secrets) -> Early:
    with httpx.Client(base_url=cluster.url, timeout=10.0) as client:
        browser = Browser(cluster, client, secrets_seen)
        session = login(browser, new_user(cluster))
        sid = str(unverified_parts(browser.token(session))[1]["sid"])
        assert browser.logout(session).status_code == 200
    (entry,) = read_feed(cluster.url).entries("session", sid)
    return Early(sid=sid, entry=entry)


@pytest.fixture(autouse=True)
def _started_early(early: Early) -> None:
    """Every test runs after the early revocation and under the module's Redis watch."""


def orders_revocations(cluster: Cluster) -> tuple[int, dict[str, Any]]:
    """Orders' readiness and its revocation check."""
    response = httpx.get(f"{cluster.service_url('orders')}/readyz", timeout=5)
    status: dict[str, Any] = response.json()["checks"]["revocations"]
    return response.status_code, status


def revoked_token(cluster: Cluster, browser: Browser) -> str:
    """A token whose session has logged out, refused everywhere."""
    session = login(browser, new_user(cluster))
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
def test_the_set_survives_a_restart(cluster: Cluster, browser: Browser, restarted: str) -> None:
    token = revoked_token(cluster, browser)
    (entry,) = read_feed(cluster.url).entries("session", str(unverified_parts(token)[1]["sid"]))
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
    cluster: Cluster, browser: Browser, client: httpx.Client
) -> None:
    revoked = revoked_token(cluster, browser)
    live = browser.token(login(browser, new_user(cluster)))
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
    poll(
        lambda: client.get("/api/orders", headers=bearer(live)).status_code == 200,
        within=15,
        what="the gateway accepting again",
    )
    assert_json_error(client.get("/api/orders", headers=bearer(revoked)), 401, "invalid_token")


def test_an_entry_leaves_the_feed_once_no_token_it_covers_can_be_valid(
    cluster: Cluster, early: Early
) -> None:
    """Last in the module, so most of the wait has passed in the tests above."""
    assert early.entry["until"] == early.entry["before"] + TOKEN_TTL + MAX_LEEWAY
    poll(
        lambda: not read_feed(cluster.url).entries("session", early.sid),
        within=TOKEN_TTL + MAX_LEEWAY + 10,
        what="the early entry to expire",
        every=0.5,
    )


def test_orders_and_the_gateway_never_opened_a_connection_to_redis(redis_watch: RedisWatch) -> None:
    """Last: through restarts of auth, Redis and the verifiers themselves."""
    redis_watch.assert_verifiers_never_connected()
