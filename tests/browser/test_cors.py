"""A single-page app on another origin calls the API with a token; no other origin can read it, and no
origin reaches a cookie route.

The cluster lets one page origin (``CORS_ALLOWED_ORIGINS``) call the bearer-only API routes.
Both pages are on another port of the gateway's host: the same site, so the browser sends them
the session cookie whenever they ask with ``credentials: "include"``, and only CORS stands
between them and a cookie route's answer. Each request is judged by what the page could read
and by what the gateway answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from deploy.devcluster import Cluster, ClusterConfig
from services.auth.key_store import init_keys
from tests.support.cluster import Browser as PublicClient
from tests.support.cluster import LoggedIn, Secrets
from tests.support.polling import poll

from .conftest import AttackerSite, Server, gateway_log, log_in, serve_pages, session_cookie_value

pytestmark = pytest.mark.browser

SPA_PAGE = b"<!doctype html><title>an app on another origin</title>"

# What a script on the page can make of one fetch: the status and body, or the browser's refusal.
FETCH = """async ([url, init]) => {
  try {
    const response = await fetch(url, init);
    return response.status + " " + await response.text();
  } catch (error) {
    return "blocked: " + error.name;
  }
}"""

MINT = json.dumps({"audience": "orders"})


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[AttackerSite, AttackerSite]]:
    """The allowed app's site and another one, each on a port of its own."""
    with serve_pages() as allowed, serve_pages() as other:
        allowed.pages["/"] = other.pages["/"] = SPA_PAGE
        yield allowed, other


@pytest.fixture(scope="module")
def cluster(
    chromium: Browser, sites: tuple[AttackerSite, AttackerSite], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """This module's own cluster (in place of the package's), with CORS for the allowed site's origin."""
    allowed, _ = sites
    env = {"REDIS_TIMEOUT_SECONDS": "3", "CORS_ALLOWED_ORIGINS": allowed.url("localhost", "")}
    cluster = Cluster(ClusterConfig.on_free_ports(tmp_path_factory.mktemp("cors-cluster"), env))
    init_keys(cluster.keys_dir)
    with cluster as started:
        yield started


@pytest.fixture(scope="module")
def session(cluster: Cluster) -> LoggedIn:
    """Alice's session, logged in over plain HTTP on the public origin."""
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        return PublicClient(cluster, http, Secrets()).login()


@pytest.fixture(scope="module")
def token(cluster: Cluster, session: LoggedIn) -> str:
    """A token for orders from that session: what the app's user handed the app."""
    return Server(cluster, session.cookie).token()


def user(page: Page, context: BrowserContext, cluster: Cluster) -> Server:
    """Log in on the gateway's own page, so the browser holds the session cookie."""
    log_in(page, cluster)
    cookie = session_cookie_value(context, cluster)
    assert cookie
    return Server(cluster, cookie)


def open_site(context: BrowserContext, site: AttackerSite) -> Page:
    page = context.new_page()
    page.goto(site.url("localhost", "/"))
    return page


def fetch(page: Page, url: str, **init: Any) -> str:
    result: str = page.evaluate(FETCH, [url, init])
    return result


def answers_since(cluster: Cluster, mark: int, method_path: str) -> list[int]:
    return [status for seen, status in gateway_log(cluster)[mark:] if seen == method_path]


def logged(cluster: Cluster, mark: int, method_path: str) -> list[int]:
    """The gateway's answers to ``method_path`` since ``mark``, once the last request's line is written.

    The gateway logs a request after its answer is sent, so the page can read it first.
    """
    return poll(lambda: answers_since(cluster, mark, method_path), within=5, what=f"{method_path} logged")


def test_the_allowed_origin_lists_and_creates_orders_with_a_token(
    context: BrowserContext, cluster: Cluster, sites: tuple[AttackerSite, AttackerSite], token: str
) -> None:
    app = open_site(context, sites[0])
    bearer = {"Authorization": f"Bearer {token}"}
    mark = len(gateway_log(cluster))

    created = fetch(
        app,
        f"{cluster.url}/api/orders",
        method="POST",
        headers={**bearer, "Content-Type": "application/json"},
        body=json.dumps({"item": "tea from afar", "quantity": 2}),
    )
    listed = fetch(app, f"{cluster.url}/api/orders", headers=bearer)

    assert created.startswith("201 "), created
    assert listed.startswith("200 "), listed
    items = [order["item"] for order in json.loads(listed.split(" ", 1)[1])["orders"]]
    assert "tea from afar" in items
    # The token and the JSON body needed a preflight, and the gateway approved it.
    assert answers_since(cluster, mark, "OPTIONS /api/orders") == [204]


def test_another_origin_cannot_read_the_api_even_with_a_token(
    context: BrowserContext, cluster: Cluster, sites: tuple[AttackerSite, AttackerSite], token: str
) -> None:
    other = open_site(context, sites[1])
    mark = len(gateway_log(cluster))

    with_token = fetch(other, f"{cluster.url}/api/orders", headers={"Authorization": f"Bearer {token}"})
    simple = fetch(other, f"{cluster.url}/api/orders")

    assert with_token == "blocked: TypeError"
    assert simple == "blocked: TypeError"
    # The preflight was refused, so the request with the token was never sent; the simple request
    # (no preflight) was answered, without a token, and the page could not read that either.
    assert logged(cluster, mark, "GET /api/orders") == [401]
    assert answers_since(cluster, mark, "OPTIONS /api/orders") == [403]


def test_the_allowed_origin_reaches_no_cookie_route(
    page: Page,
    context: BrowserContext,
    cluster: Cluster,
    sites: tuple[AttackerSite, AttackerSite],
    token: str,
) -> None:
    server = user(page, context, cluster)
    app = open_site(context, sites[0])
    mark = len(gateway_log(cluster))
    gateway = cluster.url
    json_body = {"Content-Type": "application/json"}

    results = {
        "read /auth/me with the cookie": fetch(app, f"{gateway}/auth/me", credentials="include"),
        "mint with the CSRF header": fetch(
            app,
            f"{gateway}/auth/token",
            method="POST",
            credentials="include",
            headers={**json_body, "X-CSRF-Token": "guess"},
            body=MINT,
        ),
        "mint with a simple request": fetch(
            app,
            f"{gateway}/auth/token",
            method="POST",
            credentials="include",
            headers={"Content-Type": "text/plain"},
            body=MINT,
        ),
        "log out with the CSRF header": fetch(
            app, f"{gateway}/auth/logout", method="POST", credentials="include", headers={"X-CSRF-Token": "x"}
        ),
        "read the API with the cookie": fetch(app, f"{gateway}/api/orders", credentials="include"),
        "read the API with the cookie and a token": fetch(
            app, f"{gateway}/api/orders", credentials="include", headers={"Authorization": f"Bearer {token}"}
        ),
    }

    assert results == dict.fromkeys(results, "blocked: TypeError")
    assert logged(cluster, mark, "GET /api/orders") == [401]
    # The cookie went along (same site) and /auth/me answered, but only to the browser, not the page.
    assert answers_since(cluster, mark, "GET /auth/me") == [200]
    # No cookie route approved a preflight, so nothing needing X-CSRF-Token was ever sent; the
    # simple mint reached auth and was refused for its Origin.
    assert answers_since(cluster, mark, "OPTIONS /auth/token") == [405]
    assert answers_since(cluster, mark, "OPTIONS /auth/logout") == [405]
    assert answers_since(cluster, mark, "POST /auth/token") == [403]
    assert answers_since(cluster, mark, "POST /auth/logout") == []
    # The API approves no credentialed request: the one without a token was answered (401), but
    # never readable; the one with a token never passed its preflight.
    assert server.session_alive()


def test_the_public_description_lists_no_preflights(cluster: Cluster) -> None:
    document = httpx.get(f"{cluster.url}/openapi.json", timeout=10).json()

    assert "/api/orders" in document["paths"]
    assert all("options" not in operations for operations in document["paths"].values())
