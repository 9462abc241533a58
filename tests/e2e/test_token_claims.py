"""Tokens signed with auth's real key but with the wrong claims open nothing at orders or the gateway."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.support.cluster import ALICE, Browser, sign_with_cluster_key
from tests.support.http import assert_json_error, bearer

pytestmark = pytest.mark.e2e


def _claims(cluster: Cluster, sub: str, audience: str, *, issued_ago: int = 0) -> dict[str, Any]:
    now = int(time.time()) - issued_ago
    return {
        "iss": cluster.public_origin,
        "sub": sub,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "client_id": "gateway-web",
        "sid": uuid.uuid4().hex,
        "role": "user",
    }


@pytest.fixture(params=["orders directly", "through the gateway"])
def orders_list_url(request: pytest.FixtureRequest, cluster: Cluster) -> str:
    if request.param == "orders directly":
        return f"{cluster.service_url('orders')}/orders"
    return f"{cluster.url}/api/orders"


def test_a_token_signed_with_the_real_key_for_orders_is_accepted(
    cluster: Cluster, browser: Browser, orders_list_url: str
) -> None:
    # The control for the test below: the hand-made token is only wrong in its audience.
    sub = browser.login(ALICE).user["id"]
    token = sign_with_cluster_key(cluster, _claims(cluster, sub, "orders"))

    response = httpx.get(orders_list_url, headers=bearer(token))

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("audience", ["auth", "gateway", "orders-admin"])
def test_a_token_for_another_audience_is_rejected(
    cluster: Cluster, browser: Browser, orders_list_url: str, audience: str
) -> None:
    sub = browser.login(ALICE).user["id"]
    token = sign_with_cluster_key(cluster, _claims(cluster, sub, audience))

    response = httpx.get(orders_list_url, headers=bearer(token))

    assert_json_error(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_a_token_naming_orders_among_several_audiences_is_rejected(
    cluster: Cluster, browser: Browser, orders_list_url: str
) -> None:
    sub = browser.login(ALICE).user["id"]
    claims = {**_claims(cluster, sub, "orders"), "aud": ["orders", "auth"]}
    token = sign_with_cluster_key(cluster, claims)

    response = httpx.get(orders_list_url, headers=bearer(token))

    assert_json_error(response, 401, "invalid_token")


def test_a_token_from_another_issuer_is_rejected(
    cluster: Cluster, browser: Browser, orders_list_url: str
) -> None:
    sub = browser.login(ALICE).user["id"]
    claims = {**_claims(cluster, sub, "orders"), "iss": "http://localhost:9000"}
    token = sign_with_cluster_key(cluster, claims)

    response = httpx.get(orders_list_url, headers=bearer(token))

    assert_json_error(response, 401, "invalid_token")


def test_an_expired_token_is_rejected(cluster: Cluster, browser: Browser, orders_list_url: str) -> None:
    # Past exp plus the largest leeway a verifier may grant (30 s).
    sub = browser.login(ALICE).user["id"]
    token = sign_with_cluster_key(cluster, _claims(cluster, sub, "orders", issued_ago=300 + 31))

    response = httpx.get(orders_list_url, headers=bearer(token))

    assert_json_error(response, 401, "invalid_token")


def test_a_token_living_longer_than_five_minutes_is_rejected(
    cluster: Cluster, browser: Browser, orders_list_url: str
) -> None:
    sub = browser.login(ALICE).user["id"]
    claims = _claims(cluster, sub, "orders")
    token = sign_with_cluster_key(cluster, {**claims, "exp": claims["iat"] + 3600})

    response = httpx.get(orders_list_url, headers=bearer(token))

    assert_json_error(response, 401, "invalid_token")
