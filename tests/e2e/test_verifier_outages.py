"""Verifiers ride out an auth outage on their last good keys for a bounded time, then fail closed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.support.cluster import ALICE, Browser, ClusterFactory
from tests.support.http import assert_json_error, bearer
from tests.support.polling import poll

pytestmark = pytest.mark.e2e

# A one-second max-age makes the verifiers refetch (and fail) every second or two while auth
# is down; after six seconds without a good fetch they stop trusting what they have.
OUTAGE_ENV = {"JWKS_MAX_AGE_SECONDS": "1", "JWKS_MAX_STALE_SECONDS": "6"}


@pytest.fixture(scope="module")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    with cluster_factory("verifier-outages", OUTAGE_ENV) as started:
        yield started


def orders_jwks(cluster: Cluster) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{cluster.service_url('orders')}/readyz", timeout=5)
    status: dict[str, Any] = response.json()["checks"]["jwks"]
    return response.status_code, status


def test_auth_down_past_max_age_keeps_tokens_valid_until_the_stale_bound_then_503(
    cluster: Cluster, browser: Browser, client: httpx.Client
) -> None:
    token = browser.token(browser.login(ALICE))
    _, before = orders_jwks(cluster)
    cluster.stop_service("auth")
    try:
        # Past the max-age, with fetches failing: the last good keys still verify.
        poll(
            lambda: (
                orders_jwks(cluster)[1]["failures"] >= before["failures"] + 2
                and orders_jwks(cluster)[1]["age_seconds"] > 1
            ),
            within=10,
            what="orders failing to refresh its JWKS",
        )
        assert client.get("/api/orders", headers=bearer(token)).status_code == 200
        direct = httpx.get(f"{cluster.service_url('orders')}/orders", headers=bearer(token))
        assert direct.status_code == 200
        metrics = httpx.get(f"{cluster.service_url('orders')}/metrics").text
        assert 'jwks_last_fetch_success{audience="orders"} 0.0' in metrics

        # Past the stale bound: fail closed, with 503 (not the caller's fault) and not ready.
        poll(lambda: orders_jwks(cluster)[0] == 503, within=15, what="orders reporting not ready")
        assert_json_error(client.get("/api/orders", headers=bearer(token)), 503)
        assert_json_error(httpx.get(f"{cluster.service_url('orders')}/orders", headers=bearer(token)), 503)
    finally:
        cluster.start_service("auth")
    poll(lambda: orders_jwks(cluster)[0] == 200, within=15, what="orders recovering")
    # The gateway's verifier retries on its own clock, so it may come back a moment after orders.
    poll(
        lambda: client.get("/api/orders", headers=bearer(token)).status_code == 200,
        within=15,
        what="the gateway recovering",
    )


def test_a_fresh_verifier_with_auth_down_is_not_ready_and_answers_503(
    cluster: Cluster, browser: Browser
) -> None:
    token = browser.token(browser.login(ALICE))
    cluster.stop_service("orders")
    cluster.stop_service("auth")
    try:
        cluster.start_service("orders", wait=False)
        orders = cluster.service_url("orders")

        def answering() -> httpx.Response | None:
            try:
                return httpx.get(f"{orders}/readyz", timeout=2)
            except httpx.TransportError:
                return None

        ready = poll(answering, within=20, what="orders answering")
        body = assert_json_error(ready, 503, "not_ready")
        assert body["checks"]["jwks"]["ready"] is False
        assert body["checks"]["jwks"]["keys"] == 0
        refused = httpx.get(f"{orders}/orders", headers=bearer(token), timeout=10)
        assert_json_error(refused, 503)
        assert "invalid_token" not in refused.headers.get("www-authenticate", "")
    finally:
        cluster.start_service("auth")
    poll(lambda: orders_jwks(cluster)[0] == 200, within=15, what="the fresh orders loading keys")
    assert httpx.get(f"{orders}/orders", headers=bearer(token)).status_code == 200


def test_the_gateway_never_exposes_an_upstreams_metrics(cluster: Cluster, client: httpx.Client) -> None:
    for path in ("/api/orders/../metrics", "/auth/metrics", "/api/orders/metrics"):
        response = client.get(path)
        assert "jwks_fetches_total" not in response.text
        assert "auth_tokens_signed" not in response.text
    # The gateway's own metrics are its own: no upstream's.
    own = client.get("/metrics")
    assert own.status_code == 200
    assert 'jwks_keys{audience="orders"}' in own.text
    assert "auth_tokens_signed" not in own.text
