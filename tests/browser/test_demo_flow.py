"""The demo page in Chromium against the real cluster: log in, tokens, orders, reload, log out."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from deploy.devcluster import Cluster
from tests.support.cluster import ALICE
from tests.support.http import SESSION_COOKIE

from .conftest import Server, log_in, session_cookie_value, wait_for_token, wait_until

pytestmark = pytest.mark.browser


def shown_claims(page: Page) -> dict[str, object]:
    claims: dict[str, object] = json.loads(page.text_content("#token-claims") or "")
    return claims


def test_log_in_mint_create_and_list_orders_reload_and_log_out(
    page: Page, context: BrowserContext, cluster: Cluster
) -> None:
    page.goto("/")
    expect(page.locator("#login-panel")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()

    log_in(page, cluster)

    expect(page.locator("#user")).to_have_text(f"{ALICE} (user)")
    header = json.loads(page.text_content("#token-header") or "")
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    claims = shown_claims(page)
    assert claims["aud"] == "orders"
    assert claims["iss"] == cluster.public_origin
    left = int(claims["exp"]) - time.time()  # type: ignore[call-overload]
    minutes, seconds = (int(part) for part in (page.text_content("#countdown") or "").split(":"))
    assert abs(minutes * 60 + seconds - left) <= 3
    # The countdown ticks: it shows another value within a couple of seconds.
    expect(page.locator("#countdown")).not_to_have_text(page.text_content("#countdown") or "")

    page.fill("#item", "green tea")
    page.fill("#quantity", "3")
    page.click("#order-form button[type=submit]")
    row = page.locator("#orders tr", has_text="green tea")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(1)).to_have_text("3")
    server = Server(cluster, session_cookie_value(context, cluster) or "")
    assert [(order["item"], order["quantity"]) for order in server.orders()] == [("green tea", 3)]

    # A new token replaces the old one; nothing about either is kept outside the page's variables.
    page.click("#mint")
    expect(page.locator("#token-claims")).not_to_contain_text(str(claims["jti"]))
    wait_for_token(page)
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0

    # After a reload the page gets its CSRF token back from GET /auth/me, so minting still works.
    page.reload()
    wait_for_token(page)
    expect(page.locator("#orders tr", has_text="green tea")).to_have_count(1)
    page.fill("#item", "oolong")
    page.click("#order-form button[type=submit]")
    expect(page.locator("#orders tr")).to_have_count(2)

    page.click("#logout")
    expect(page.locator("#login-panel")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    assert page.text_content("#token-claims") == ""
    assert session_cookie_value(context, cluster) is None
    assert not server.session_alive()


def test_a_wrong_password_is_reported_and_sets_no_cookie(
    page: Page, context: BrowserContext, cluster: Cluster
) -> None:
    page.goto("/")
    page.fill("#email", ALICE)
    page.fill("#password", "not-the-password")
    page.click("#login-form button[type=submit]")

    expect(page.locator("#status")).to_have_text(re.compile("invalid_credentials"))
    expect(page.locator("#app")).to_be_hidden()
    assert session_cookie_value(context, cluster) is None


def test_script_cannot_see_the_session_cookie(page: Page, context: BrowserContext, cluster: Cluster) -> None:
    log_in(page, cluster)

    assert page.evaluate("document.cookie") == ""
    (cookie,) = (cookie for cookie in context.cookies() if cookie["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Strict"
    # Nor can script replace it: a cookie written from script never overwrites an HttpOnly one.
    page.evaluate(f"document.cookie = '{SESSION_COOKIE}=planted; Secure; Path=/; SameSite=Strict'")
    assert session_cookie_value(context, cluster) == cookie["value"]
    assert Server(cluster, cookie["value"]).session_alive()


def test_the_policy_blocks_injected_inline_script_and_orders_render_as_text(
    page: Page, cluster: Cluster
) -> None:
    log_in(page, cluster)
    page.evaluate(
        """() => {
            window.violations = [];
            document.addEventListener('securitypolicyviolation',
                event => window.violations.push(event.violatedDirective));
        }"""
    )

    page.evaluate(
        """() => {
            const script = document.createElement('script');
            script.textContent = 'window.injected = "script"';
            document.body.append(script);
            const holder = document.createElement('div');
            holder.innerHTML = '<img src="/static/favicon.svg" onload="window.injected = \\'handler\\'">';
            document.body.append(holder);
        }"""
    )
    wait_until(page, "window.violations.length >= 2")
    # The image loads (it is 'self') but its inline handler must not have run either.
    wait_until(page, "[...document.images].every(image => image.complete)")

    assert page.evaluate("window.injected") is None
    assert all(directive.startswith("script-src") for directive in page.evaluate("window.violations"))

    markup = "<img src=x onerror=\"window.injected = 'order'\">"
    page.fill("#item", markup)
    page.click("#order-form button[type=submit]")
    expect(page.locator("#orders tr td").first).to_have_text(markup)
    assert page.evaluate("window.injected") is None
