"""Request ids tie a request's log lines together across services; no log line holds a secret."""

from __future__ import annotations

import httpx
import pytest

from deploy.devcluster import SERVICES, Cluster
from tests.support.cluster import ALICE, BOB, Browser, Secrets, new_request_id, wait_for_log_line
from tests.support.http import SESSION_COOKIE, bearer

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/.well-known/jwks.json", 200),
        ("GET", "/api/orders", 401),
        ("GET", "/nowhere", 404),
        ("POST", "/auth/logout", 403),
    ],
)
def test_every_response_carries_a_request_id(
    client: httpx.Client, method: str, path: str, status: int
) -> None:
    response = client.request(method, path)

    assert response.status_code == status, response.text
    assert response.headers.get("x-request-id")
    assert len(response.headers.get_list("x-request-id")) == 1


def test_request_ids_differ_between_requests(client: httpx.Client) -> None:
    first, second = client.get("/healthz"), client.get("/healthz")

    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_a_client_request_id_is_echoed_and_reaches_the_auth_log(cluster: Cluster, browser: Browser) -> None:
    request_id = new_request_id()

    response = browser.post_login(ALICE, browser.password_for(ALICE), headers={"X-Request-ID": request_id})

    assert response.status_code == 200, response.text
    assert response.headers.get_list("x-request-id") == [request_id]
    entry = wait_for_log_line(cluster, "auth", lambda line: line.get("request_id") == request_id)
    assert entry["msg"] == "POST /login 200"
    wait_for_log_line(cluster, "gateway", lambda line: line.get("request_id") == request_id)


def test_a_client_request_id_reaches_the_orders_log(cluster: Cluster, browser: Browser) -> None:
    token = browser.token(browser.login(ALICE))
    request_id = new_request_id()

    response = browser.client.get("/api/orders", headers={**bearer(token), "X-Request-ID": request_id})

    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    wait_for_log_line(cluster, "orders", lambda line: line.get("request_id") == request_id)


@pytest.mark.parametrize("request_id", ["has spaces in it", "x" * 200, "new\\nline", "<script>"])
def test_a_malformed_client_request_id_is_replaced(client: httpx.Client, request_id: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": request_id})

    assert response.status_code == 200
    assert response.headers["x-request-id"] not in ("", request_id)


def test_no_service_logs_a_password_cookie_or_token(
    cluster: Cluster, browser: Browser, secrets_seen: Secrets
) -> None:
    # A full life cycle, including failures that tempt a service to log what it was given.
    session = browser.login(ALICE)
    token = browser.token(session)
    browser.create_order(token, item="logged nowhere")
    browser.client.get("/api/orders", headers=bearer(token + "x"))
    browser.client.get("/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={session.cookie}x"})
    browser.post_login(BOB, "a-wrong-password-that-must-not-be-logged")
    browser.logout(session)
    browser.request_token(session)
    last = new_request_id()
    browser.client.post(
        "/auth/token",
        json={"audience": "orders"},
        headers={**browser.unsafe_headers(session), "X-Request-ID": last},
    )
    for service in ("gateway", "auth"):
        wait_for_log_line(cluster, service, lambda line: line.get("request_id") == last)

    secrets = {value for value in secrets_seen.values if len(value) >= 8}
    secrets |= {token + "x", session.cookie + "x", token.split(".")[2], session.cookie.split(".")[0]}
    assert browser.cluster.demo_password in secrets
    for service in SERVICES:
        lines = cluster.output(service)
        assert lines, f"{service} logged nothing at all"
        leaks = [(secret[:12], line[:200]) for line in lines for secret in secrets if secret in line]
        assert not leaks, f"{service} logged a secret: {leaks[:3]}"
