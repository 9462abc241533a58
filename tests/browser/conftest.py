"""Browser fixtures: the cluster, Debian's Chromium driven by Playwright, and an attacker's web server."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from deploy.devcluster import Cluster, ClusterConfig
from services.auth.key_store import init_keys
from tests.support.cluster import ALICE
from tests.support.http import SESSION_COOKIE
from tests.support.polling import poll

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
# What works on this machine's Chromium (see ../shared/MACHINE.md): no sandbox as root, no GPU,
# and nothing that phones home.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


# Package scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and every asyncio test after this package would find it and fail.
@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for this package; each test opens its own context (its own cookie jar)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="package")
def cluster(chromium: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The whole cluster; its public origin is http://localhost:<port>, as a user's browser sees it."""
    # Chromium shares the 2 cores with the cluster: a Redis reply can take longer than auth's
    # 0.5 s default and fail a login with 503 ("the session store is unavailable", seen in CI).
    # Nothing here tests Redis timeouts; the e2e and compose tiers do, at the default.
    env = {"REDIS_TIMEOUT_SECONDS": "3"}
    cluster = Cluster(ClusterConfig.on_free_ports(tmp_path_factory.mktemp("browser-cluster"), env))
    init_keys(cluster.keys_dir)  # in this process, as cluster_factory does
    with cluster as started:
        yield started


@pytest.fixture
def context(chromium: Browser, cluster: Cluster) -> Iterator[BrowserContext]:
    context = chromium.new_context(base_url=cluster.url)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def log_in(page: Page, cluster: Cluster, email: str = ALICE, password: str | None = None) -> None:
    """Log in through the form and wait until the page has minted its first token."""
    page.goto("/")
    page.fill("#email", email)
    page.fill("#password", password or cluster.demo_password)
    page.click("#login-form button[type=submit]")
    wait_for_token(page)


def wait_for_token(page: Page) -> None:
    """Until the page shows a live token's countdown (``m:ss``)."""
    from playwright.sync_api import expect

    expect(page.locator("#countdown")).to_have_text(re.compile(r"^\d+:\d\d$"))


def wait_until(page: Page, expression: str, timeout: float = TIMEOUT_MS / 1000) -> Any:
    """Poll a JavaScript expression until it is truthy and return its value.

    Playwright's ``wait_for_function`` evaluates its predicate with ``eval`` inside the page,
    which the demo page's CSP (rightly) forbids; ``evaluate`` goes through the DevTools protocol.
    """
    return poll(lambda: page.evaluate(expression), within=timeout, what=f"{expression!r} to be truthy")


def session_cookie_value(context: BrowserContext, cluster: Cluster) -> str | None:
    """The gateway's session cookie as the browser holds it, read through Playwright, not the page."""
    values = [cookie["value"] for cookie in context.cookies(cluster.url) if cookie["name"] == SESSION_COOKIE]
    assert len(values) <= 1, values
    return values[0] if values else None


class Server:
    """The server-side view of one user's session: what the test checks after each attack."""

    def __init__(self, cluster: Cluster, cookie: str):
        self.cluster = cluster
        self.cookie = cookie

    def get(self, path: str) -> httpx.Response:
        """A cookie-authenticated GET, as the user's browser would send it."""
        return httpx.get(
            f"{self.cluster.url}{path}", headers={"Cookie": f"{SESSION_COOKIE}={self.cookie}"}, timeout=10
        )

    def me(self) -> httpx.Response:
        return self.get("/auth/me")

    def session_alive(self) -> bool:
        response = self.me()
        assert response.status_code in (200, 401), response.text
        return response.status_code == 200

    def token(self) -> str:
        """An access token for orders, minted from the session as the demo page mints one."""
        csrf_token = self.me().json()["csrf_token"]
        headers = {
            "Cookie": f"{SESSION_COOKIE}={self.cookie}",
            "Origin": self.cluster.public_origin,
            "X-CSRF-Token": csrf_token,
        }
        minted = httpx.post(
            f"{self.cluster.url}/auth/token", json={"audience": "orders"}, headers=headers, timeout=10
        )
        assert minted.status_code == 200, minted.text
        token: str = minted.json()["access_token"]
        return token

    def orders(self) -> list[dict[str, Any]]:
        """The user's orders, read with a token the test mints itself from the session."""
        listed = httpx.get(
            f"{self.cluster.url}/api/orders", headers={"Authorization": f"Bearer {self.token()}"}, timeout=10
        )
        assert listed.status_code == 200, listed.text
        orders: list[dict[str, Any]] = listed.json()["orders"]
        return orders


def gateway_log(cluster: Cluster) -> list[tuple[str, int]]:
    """Every request the gateway has answered so far, as ``("METHOD /path", status)``."""
    seen = []
    for line in cluster.output("gateway"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("logger") == "shared.access":
            method_path, _, _ = str(entry["msg"]).rpartition(" ")
            seen.append((method_path, int(entry["status"])))
    return seen


@dataclass
class AttackerSite:
    """A web server on another port of loopback that serves whatever pages a test gives it.

    It records the ``Cookie`` header of every request and can answer a path with a ``Set-Cookie``.
    """

    port: int
    pages: dict[str, bytes]
    set_cookie: dict[str, str]
    cookies_received: list[str]

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"


@contextmanager
def serve_pages() -> Iterator[AttackerSite]:
    """A :class:`AttackerSite` on a free port of 127.0.0.1 (reached as localhost or 127.0.0.1), until exit."""
    pages: dict[str, bytes] = {}
    set_cookie: dict[str, str] = {}
    cookies_received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            cookies_received.extend(self.headers.get_all("Cookie") or [])
            body = pages.get(path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if path in set_cookie:
                self.send_header("Set-Cookie", set_cookie[path])
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield AttackerSite(
            port=server.server_address[1],
            pages=pages,
            set_cookie=set_cookie,
            cookies_received=cookies_received,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def attacker_site() -> Iterator[AttackerSite]:
    with serve_pages() as site:
        yield site
