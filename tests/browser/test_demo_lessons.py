"""What the demo page teaches: local verification, the token refused soon after logout, where to log in."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from deploy.devcluster import Cluster
from tests.support.http import assert_json_error, bearer
from tests.support.polling import poll

from .conftest import TIMEOUT_MS, log_in

pytestmark = pytest.mark.browser

DAVE = "dave@example.com"
DAVE_PASSWORD = "dave-keeps-another-long-passphrase"
ERIN = "erin@example.com"
ERIN_PASSWORD = "erin-keeps-a-third-long-passphrase"
# A revocation reaches the verifiers within about a second; the bound is generous for a loaded machine.
REFUSED_WITHIN_MS = 5_000


def test_the_page_shows_that_the_token_is_checked_against_the_published_keys(
    page: Page, cluster: Cluster
) -> None:
    log_in(page, cluster)

    kid = json.loads(page.text_content("#token-header") or "")["kid"]
    expect(page.locator("#token-kid")).to_have_text(kid)
    expect(page.locator("#kid-published")).to_contain_text("published in the JWKS")
    expect(page.locator("#local-check")).to_contain_text("no call to auth and no Redis")
    expect(page.locator("#local-check")).to_contain_text("docs/architecture.md")


def test_after_logout_the_kept_token_is_refused_within_a_second_and_the_sentence_says_why(
    page: Page, cluster: Cluster
) -> None:
    log_in(page, cluster)
    expect(page.locator("#after-logout")).to_be_hidden()
    minted = page.evaluate("state.accessToken")
    assert httpx.get(f"{cluster.url}/api/orders", headers=bearer(minted), timeout=10).status_code == 200

    page.click("#logout")

    expect(page.locator("#login-panel")).to_be_visible()
    expect(page.locator("#after-logout")).to_be_visible()
    expect(page.locator("#old-countdown")).to_have_text(re.compile(r"^[0-4]:\d\d$"))
    assert page.evaluate("state.oldToken") == minted
    # The page tries the kept token on its own until the revocation reaches the verifiers.
    result = page.locator("#old-token-result")
    expect(result).to_have_attribute("data-verdict", "refused", timeout=REFUSED_WITHIN_MS)
    expect(result).to_have_text(re.compile(r"^Refused \d+\.\d s after logout: 401 invalid_token: "))
    # Any client holding the token gets the same answer, and so does the button.
    assert_json_error(
        httpx.get(f"{cluster.url}/api/orders", headers=bearer(minted), timeout=10), 401, "invalid_token"
    )
    page.click("#try-old-token")
    expect(result).to_have_text(re.compile(r"^Refused .*401 invalid_token"))
    # The explanation says what the answer shows: not expired, refused, and how verifiers know.
    why = page.text_content("#old-token-why") or ""
    assert "refused within about a second" in why
    assert "still accepted until it expires" not in why
    assert "5 minutes" in why
    assert "JWKS" in why
    assert "/.well-known/revocations.json" in why

    # Logging in again starts a new story: the kept token is dropped.
    log_in(page, cluster)
    expect(page.locator("#after-logout")).to_be_hidden()
    assert page.evaluate("state.oldToken") is None


def test_logging_out_everywhere_in_a_second_browser_refuses_the_first_browsers_token(
    chromium: Browser, cluster: Cluster
) -> None:
    # His own user: logging out everywhere must not end sessions other tests hold.
    added = cluster.auth_cli("users", "add", ERIN, "--role", "user", stdin=ERIN_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    contexts = [chromium.new_context(base_url=cluster.url) for _ in range(2)]
    try:
        first, second = (context.new_page() for context in contexts)
        for context in contexts:
            context.set_default_timeout(TIMEOUT_MS)
        log_in(first, cluster, ERIN, ERIN_PASSWORD)
        log_in(second, cluster, ERIN, ERIN_PASSWORD)
        token = first.evaluate("state.accessToken")
        assert httpx.get(f"{cluster.url}/api/orders", headers=bearer(token), timeout=10).status_code == 200

        second.click("#logout-all")

        expect(second.locator("#login-panel")).to_be_visible()
        expect(second.locator("#old-token-result")).to_have_attribute(
            "data-verdict", "refused", timeout=REFUSED_WITHIN_MS
        )
        # The first browser still shows its token, and the orders it asks for are refused.
        poll(
            lambda: (
                httpx.get(f"{cluster.url}/api/orders", headers=bearer(token), timeout=10).status_code == 401
            ),
            within=REFUSED_WITHIN_MS / 1000,
            what="the first browser's token refused",
        )
        first.click("#refresh-orders")
        expect(first.locator("#status")).to_contain_text("invalid_token")
        assert first.evaluate("state.accessToken") == token
    finally:
        for context in contexts:
            context.close()


def _with_next(route: Route, next_link: str, *extra: dict[str, Any]) -> None:
    """The real first page of orders (plus ``extra``), with ``next`` set as the paginated API sets it."""
    response = route.fetch()
    body: dict[str, Any] = response.json()
    route.fulfill(response=response, json={**body, "orders": [*extra, *body["orders"]], "next": next_link})


def _order(item: str) -> dict[str, Any]:
    return {"id": "f" * 32, "item": item, "quantity": 7, "created_at": "2026-01-01T00:00:00.000000Z"}


def test_a_more_button_follows_next_and_only_as_a_query_on_the_same_path(
    page: Page, cluster: Cluster
) -> None:
    log_in(page, cluster)
    expect(page.locator("#more-orders")).to_be_hidden()
    asked: list[str] = []
    listing = re.compile(r".*/api/orders(\?.*)?$")

    def orders(route: Route) -> None:
        asked.append(route.request.url)
        if "cursor=" in route.request.url:
            route.fulfill(json={"orders": [_order("from the next page")], "next": None})
        else:
            _with_next(route, "?cursor=c2&limit=20")

    page.route(listing, orders)
    page.click("#refresh-orders")
    more = page.locator("#more-orders")
    expect(more).to_be_visible()
    rows_before = page.locator("#orders tr").count()

    more.click()

    expect(page.locator("#orders tr")).to_have_count(rows_before + 1)
    expect(page.locator("#orders tr").last).to_contain_text("from the next page")
    expect(more).to_be_hidden()
    assert asked[-1] == f"{cluster.url}/api/orders?cursor=c2&limit=20"

    # A `next` that is not a query (another path, another host) is never followed with the token.
    page.unroute(listing)
    page.route(listing, lambda route: _with_next(route, "https://attacker.example/steal", _order("hostile")))
    page.click("#refresh-orders")
    expect(page.locator("#orders tr").first).to_contain_text("hostile")
    expect(more).to_be_hidden()
    assert page.evaluate("state.ordersNext") is None
    page.unroute_all(behavior="wait")


def test_logging_in_from_127_0_0_1_says_which_origin_to_use(chromium: Browser, cluster: Cluster) -> None:
    port = cluster.url.rsplit(":", 1)[1]
    context: BrowserContext = chromium.new_context(base_url=f"http://127.0.0.1:{port}")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto("/")
        page.fill("#email", "alice@example.com")
        page.fill("#password", cluster.demo_password)
        page.click("#login-form button[type=submit]")

        status = page.locator("#status")
        expect(status).to_contain_text("only accepts its configured origin")
        link = status.locator("a")
        expect(link).to_have_text(cluster.public_origin)
        assert link.get_attribute("href") == f"{cluster.public_origin}/"
    finally:
        context.close()


def test_a_browser_label_cut_by_auth_is_shown_as_cut(chromium: Browser, cluster: Cluster) -> None:
    # Her own user, so that sessions other tests leave behind never show up in her list.
    added = cluster.auth_cli("users", "add", DAVE, "--role", "user", stdin=DAVE_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    agent = "a-custom-client/1.0 " + "with-a-very-long-description " * 4
    context = chromium.new_context(base_url=cluster.url, user_agent=agent)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        log_in(page, cluster, DAVE, DAVE_PASSWORD)

        label = page.locator("#sessions tr.current td.agent")
        expect(label).to_have_text(re.compile("…$"))
        kept = label.get_attribute("title") or ""
        assert agent.startswith(kept)
        assert (label.text_content() or "") == f"{kept}…"
    finally:
        context.close()
