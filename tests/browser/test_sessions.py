"""The page lists the user's sessions and revokes them: GET and DELETE /auth/sessions/{handle}."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from deploy.devcluster import Cluster

from .conftest import TIMEOUT_MS, Server, log_in, session_cookie_value

pytestmark = pytest.mark.browser

CAROL = "carol@example.com"
CAROL_PASSWORD = "carol-keeps-a-long-passphrase"


def test_a_user_revokes_another_session_then_the_current_one(chromium: Browser, cluster: Cluster) -> None:
    # Her own user, so that sessions other tests leave behind never show up in her list.
    added = cluster.auth_cli("users", "add", CAROL, "--role", "user", stdin=CAROL_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    laptop = chromium.new_context(base_url=cluster.url, user_agent="Laptop/1.0")
    phone = chromium.new_context(base_url=cluster.url, user_agent="Phone/2.0")
    try:
        for context in (laptop, phone):
            context.set_default_timeout(TIMEOUT_MS)
        on_phone = phone.new_page()
        log_in(on_phone, cluster, CAROL, CAROL_PASSWORD)
        on_laptop = laptop.new_page()
        log_in(on_laptop, cluster, CAROL, CAROL_PASSWORD)
        laptop_server = Server(cluster, session_cookie_value(laptop, cluster) or "")
        phone_server = Server(cluster, session_cookie_value(phone, cluster) or "")
        listed = laptop_server.get("/auth/sessions")
        assert listed.status_code == 200, f"GET /auth/sessions answered {listed.status_code}: {listed.text}"

        rows = on_laptop.locator("#sessions tr")
        expect(rows).to_have_count(2)
        expect(on_laptop.locator("#sessions tr.current")).to_contain_text("Laptop/1.0")
        other = rows.filter(has_text="Phone/2.0")
        expect(other.locator("td").nth(2)).to_have_text("127.0.0.1")

        other.get_by_role("button", name="Revoke").click()

        expect(rows).to_have_count(1)
        assert not phone_server.session_alive()
        assert laptop_server.session_alive()
        # The phone finds out on its next request and goes back to the login form.
        on_phone.click("#mint")
        expect(on_phone.locator("#login-panel")).to_be_visible()
        expect(on_phone.locator("#status")).to_have_text(re.compile("session has ended"))

        on_laptop.get_by_role("button", name="Revoke (this one)").click()

        expect(on_laptop.locator("#login-panel")).to_be_visible()
        assert not laptop_server.session_alive()
        assert session_cookie_value(laptop, cluster) is None
    finally:
        laptop.close()
        phone.close()
