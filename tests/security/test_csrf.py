"""Cross-site request forgery against every cookie-authenticated unsafe endpoint, through the gateway.

Each forged request must be refused with 403 and change nothing: the caller's session lives on,
and an admin action leaves its target's session alive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.security.session_helpers import SessionApi
from tests.support.cluster import ADMIN, ALICE, BOB, Browser, LoggedIn, Secrets
from tests.support.http import assert_json_error

Headers = dict[str, str]


@dataclass(frozen=True)
class Endpoint:
    """One unsafe endpoint: how to call it as ``caller``, whose sessions a success would change."""

    name: str
    method: str
    path: Callable[[SessionApi, LoggedIn, LoggedIn], str]
    body: dict[str, Any] | None = None
    admin: bool = False


def _own_handle(api: SessionApi, caller: LoggedIn, target: LoggedIn) -> str:
    return f"/auth/sessions/{api.current_handle(caller)}"


def _admin_action(action: str) -> Callable[[SessionApi, LoggedIn, LoggedIn], str]:
    return lambda api, caller, target: f"/auth/admin/users/{target.user['id']}/{action}"


ENDPOINTS = [
    Endpoint("token", "POST", lambda *_: "/auth/token", {"audience": "orders"}),
    Endpoint("logout", "POST", lambda *_: "/auth/logout"),
    Endpoint("logout-all", "POST", lambda *_: "/auth/logout-all"),
    Endpoint("revoke-session", "DELETE", _own_handle),
    Endpoint(
        "password",
        "POST",
        lambda *_: "/auth/password",
        {"current_password": "correct-horse-battery-staple", "new_password": "attacker-chosen-password"},
    ),
    Endpoint("admin-revoke-sessions", "POST", _admin_action("revoke-sessions"), admin=True),
    Endpoint("admin-disable", "POST", _admin_action("disable"), admin=True),
    Endpoint("admin-enable", "POST", _admin_action("enable"), admin=True),
]


@dataclass(frozen=True)
class Forgery:
    """How the forged request differs from the SPA's: headers set, and headers removed."""

    name: str
    status_code: str
    change: Callable[[Cluster, LoggedIn], Headers]
    remove: tuple[str, ...] = ()


def _other_port(cluster: Cluster) -> str:
    # Same host, other port: same *site*, so a browser sends SameSite=Strict cookies from it.
    return f"http://localhost:{cluster.config.gateway_port + 1}"


FORGERIES = [
    Forgery("no-origin-no-fetch-metadata", "origin_required", lambda c, o: {}, remove=("Origin",)),
    Forgery("foreign-origin", "cross_origin", lambda c, o: {"Origin": "https://attacker.example"}),
    Forgery("same-site-other-port-origin", "cross_origin", lambda c, o: {"Origin": _other_port(c)}),
    Forgery(
        "ip-literal-origin",
        "cross_origin",
        lambda c, o: {"Origin": c.public_origin.replace("localhost", "127.0.0.1")},
    ),
    Forgery("null-origin", "cross_origin", lambda c, o: {"Origin": "null"}),
    Forgery("origin-with-a-path", "cross_origin", lambda c, o: {"Origin": c.public_origin + "/"}),
    Forgery(
        "https-origin", "cross_origin", lambda c, o: {"Origin": c.public_origin.replace("http:", "https:")}
    ),
    Forgery(
        "sec-fetch-site-cross-site",
        "origin_required",
        lambda c, o: {"Sec-Fetch-Site": "cross-site"},
        remove=("Origin",),
    ),
    Forgery(
        "sec-fetch-site-same-site",
        "origin_required",
        lambda c, o: {"Sec-Fetch-Site": "same-site"},
        remove=("Origin",),
    ),
    Forgery(
        "foreign-origin-despite-same-origin-fetch-metadata",
        "cross_origin",
        lambda c, o: {"Origin": "https://attacker.example", "Sec-Fetch-Site": "same-origin"},
    ),
    Forgery("missing-csrf-token", "csrf_failed", lambda c, o: {}, remove=("X-CSRF-Token",)),
    Forgery("empty-csrf-token", "csrf_failed", lambda c, o: {"X-CSRF-Token": ""}),
    Forgery("another-sessions-csrf-token", "csrf_failed", lambda c, o: {"X-CSRF-Token": o.csrf_token}),
    Forgery("truncated-csrf-token", "csrf_failed", lambda c, o: {"X-CSRF-Token": "x"}),
]


@pytest.fixture(scope="module")
def logged_in(cluster: Cluster, secrets_seen: Secrets) -> Iterator[dict[str, LoggedIn]]:
    """One session each for alice, the admin and bob, shared: a refused forgery changes none of them."""
    with httpx.Client(base_url=cluster.url, timeout=10.0) as http:
        browser = Browser(cluster, http, secrets_seen)
        yield {email: browser.login(email) for email in (ALICE, ADMIN, BOB)}


@pytest.mark.parametrize("forgery", FORGERIES, ids=lambda forgery: forgery.name)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.name)
def test_csrf_forged_unsafe_request_is_refused_and_changes_nothing(
    cluster: Cluster, browser: Browser, logged_in: dict[str, LoggedIn], endpoint: Endpoint, forgery: Forgery
) -> None:
    api = SessionApi(browser)
    caller = logged_in[ADMIN if endpoint.admin else ALICE]
    # The bystander: the target of admin actions, and whose CSRF token a forgery may try.
    target = logged_in[BOB]
    headers = {**browser.unsafe_headers(caller), **forgery.change(cluster, target)}
    for name in forgery.remove:
        headers.pop(name)
    response = browser.client.request(
        endpoint.method, endpoint.path(api, caller, target), json=endpoint.body, headers=headers
    )
    assert_json_error(response, 403, forgery.status_code)
    assert "set-cookie" not in response.headers
    assert "access_token" not in response.text
    assert api.is_live(caller)
    assert api.is_live(target)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.name)
def test_csrf_the_same_request_from_the_app_itself_is_not_refused(
    cluster: Cluster, browser: Browser, endpoint: Endpoint
) -> None:
    """The control: without the forgery the request passes the checks, so the refusals above are theirs."""
    api = SessionApi(browser)
    caller = browser.login(ADMIN if endpoint.admin else ALICE)
    target = browser.login(BOB)
    body = endpoint.body
    if endpoint.name == "password":
        # A wrong current password: past the CSRF checks, yet leaving the demo password as it is.
        body = {"current_password": "not-the-password", "new_password": "attacker-chosen-password"}
    response = browser.client.request(
        endpoint.method, endpoint.path(api, caller, target), json=body, headers=browser.unsafe_headers(caller)
    )
    if endpoint.name == "password":
        assert_json_error(response, 403, "wrong_password")
    else:
        assert response.status_code in (200, 204), response.text
    if endpoint.name == "admin-disable":
        assert api.admin(caller, target.user["id"], "enable").status_code == 204


@pytest.mark.parametrize(
    ("name", "change", "remove", "code"),
    [
        ("foreign-origin", {"Origin": "https://attacker.example"}, (), "cross_origin"),
        ("same-site-other-port-origin", {}, (), "cross_origin"),
        ("no-origin-no-fetch-metadata", {}, ("Origin",), "origin_required"),
        ("sec-fetch-site-cross-site", {"Sec-Fetch-Site": "cross-site"}, ("Origin",), "origin_required"),
        ("sec-fetch-site-same-site", {"Sec-Fetch-Site": "same-site"}, ("Origin",), "origin_required"),
    ],
)
def test_csrf_login_from_another_origin_is_refused_without_a_session(
    cluster: Cluster, browser: Browser, name: str, change: Headers, remove: tuple[str, ...], code: str
) -> None:
    # Login CSRF would sign the victim in as the attacker; login has no session, so no CSRF
    # token, and the Origin check is what stops it.
    headers = {"Origin": _other_port(cluster), **change} if name == "same-site-other-port-origin" else change
    request_headers = {"Origin": cluster.public_origin, **headers}
    for header in remove:
        request_headers.pop(header)
    response = browser.client.post(
        "/auth/login", json={"email": ALICE, "password": cluster.demo_password}, headers=request_headers
    )
    assert_json_error(response, 403, code)
    assert "set-cookie" not in response.headers


def test_csrf_a_form_post_without_the_custom_header_cannot_log_the_user_out(
    cluster: Cluster, browser: Browser
) -> None:
    # What an attacker's <form method=post> can send from the same site: the cookie, a simple
    # content type, no custom header. Even with the right Origin it lacks the CSRF token.
    caller = browser.login(ALICE)
    headers = {
        "Cookie": browser.unsafe_headers(caller)["Cookie"],
        "Origin": cluster.public_origin,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    for path in ("/auth/logout", "/auth/logout-all"):
        assert_json_error(browser.client.post(path, content=b"", headers=headers), 403, "csrf_failed")
    assert SessionApi(browser).is_live(caller)
