"""Outages: Redis down leaves token verification alone; auth down leaves cached keys working."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.support.cluster import ALICE, Browser, ClusterFactory
from tests.support.http import assert_json_error, bearer
from tests.support.polling import poll

pytestmark = pytest.mark.e2e

Outage = Callable[[str], AbstractContextManager[None]]
FAIL_FAST_SECONDS = 2.0


@pytest.fixture(scope="module")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    """A cluster of this module's own, since its tests stop parts of it."""
    with cluster_factory("faults") as started:
        yield started


@pytest.fixture
def outage(cluster: Cluster) -> Outage:
    """``with outage("redis"):`` stops a service for the block and restarts it afterwards."""

    @contextmanager
    def stopped(name: str) -> Iterator[None]:
        cluster.stop_service(name)
        try:
            yield
        finally:
            cluster.start_service(name)

    return stopped


def _timed(send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = send()
    return response, time.monotonic() - started


def test_orders_keeps_serving_valid_tokens_while_redis_is_down(
    browser: Browser, client: httpx.Client, cluster: Cluster, outage: Outage
) -> None:
    token = browser.token(browser.login(ALICE))

    with outage("redis"):
        through_gateway = client.get("/api/orders", headers=bearer(token))
        direct = httpx.get(f"{cluster.service_url('orders')}/orders", headers=bearer(token))
        created = client.post("/api/orders", json={"item": "tea", "quantity": 1}, headers=bearer(token))

    assert through_gateway.status_code == 200, through_gateway.text
    assert direct.status_code == 200, direct.text
    assert created.status_code == 201, created.text


def test_login_and_token_fail_fast_with_503_while_redis_is_down(browser: Browser, outage: Outage) -> None:
    session = browser.login(ALICE)

    with outage("redis"):
        login, login_seconds = _timed(lambda: browser.post_login(ALICE, browser.password_for(ALICE)))
        token, token_seconds = _timed(lambda: browser.request_token(session))

    assert_json_error(login, 503)
    assert login_seconds < FAIL_FAST_SECONDS
    assert_json_error(token, 503)
    assert token_seconds < FAIL_FAST_SECONDS
    assert not login.headers.get_list("set-cookie")


def test_auth_readiness_reports_redis_down(cluster: Cluster, outage: Outage) -> None:
    with outage("redis"):
        ready = httpx.get(f"{cluster.service_url('auth')}/readyz", timeout=5)

    assert_json_error(ready, 503)


def test_the_same_session_works_again_after_redis_restarts(
    browser: Browser, cluster: Cluster, outage: Outage
) -> None:
    session = browser.login(ALICE)

    with outage("redis"):
        during = browser.request_token(session)

    # A pooled connection may fail once after the restart; what counts is that it recovers.
    poll(
        lambda: browser.request_token(session),
        until=lambda after: after.status_code == 200,
        within=10,
        what="a token after Redis restarted",
        every=0.1,
    )
    assert_json_error(during, 503)


def test_gateway_and_orders_verify_with_cached_keys_while_auth_is_down(
    browser: Browser, client: httpx.Client, cluster: Cluster, outage: Outage
) -> None:
    token = browser.token(browser.login(ALICE))

    with outage("auth"):
        through_gateway = client.get("/api/orders", headers=bearer(token))
        direct = httpx.get(f"{cluster.service_url('orders')}/orders", headers=bearer(token))
        forged = client.get("/api/orders", headers=bearer(token[:-4] + "AAAA"))

    assert through_gateway.status_code == 200, through_gateway.text
    assert direct.status_code == 200, direct.text
    assert_json_error(forged, 401)


def test_gateway_answers_502_json_for_auth_routes_while_auth_is_down_and_recovers(
    browser: Browser, client: httpx.Client, outage: Outage
) -> None:
    with outage("auth"):
        login, seconds = _timed(lambda: browser.post_login(ALICE, browser.password_for(ALICE)))
        jwks = client.get("/.well-known/jwks.json")
    session = browser.login(ALICE)

    assert_json_error(login, 502)
    assert seconds < FAIL_FAST_SECONDS
    assert login.headers.get("x-request-id")
    assert_json_error(jwks, 502)
    assert browser.request_token(session).status_code == 200
