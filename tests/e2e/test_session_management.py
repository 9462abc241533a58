"""Session management through the gateway: list, revoke, log out everywhere, change password, admin."""

from __future__ import annotations

import httpx

from deploy.devcluster import Cluster
from tests.security.session_helpers import PASSWORD, SessionApi, cleared_cookie, login, new_user
from tests.support.cluster import ADMIN, Browser
from tests.support.http import assert_json_error, session_cookie, unverified_parts

NEW_PASSWORD = "another-long-passphrase-1"


def test_sessions_lists_each_login_newest_first_with_its_details(cluster: Cluster, browser: Browser) -> None:
    api = SessionApi(browser)
    email = new_user(cluster)
    first = login(browser, email, **{"User-Agent": "first-browser/1.0"})
    second = login(browser, email, **{"User-Agent": "x" * 1000})
    response = browser.client.get("/auth/sessions", headers={"Cookie": f"__Host-session={second.cookie}"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    listed = response.json()["sessions"]
    assert [s["current"] for s in listed] == [True, False]
    newest, oldest = listed
    assert set(newest) == {"handle", "created_at", "last_seen", "user_agent", "ip", "current", "kind"}
    assert newest["kind"] == oldest["kind"] == "browser"
    # Stored as a label of at most 64 characters (a browser's is "Chrome 131 on Linux").
    assert newest["user_agent"] == "x" * 64
    assert oldest["user_agent"] == "first-browser/1.0"
    assert newest["created_at"] >= oldest["created_at"]
    assert newest["last_seen"] >= newest["created_at"]
    # The gateway's X-Forwarded-For, believed because auth trusts loopback: the client's address.
    assert newest["ip"] == oldest["ip"] == "127.0.0.1"
    # The handle is the token's sid and never any part of a cookie.
    _, claims = unverified_parts(browser.token(second))
    assert claims["sid"] == newest["handle"]
    assert newest["handle"] not in second.cookie
    assert oldest["handle"] not in first.cookie
    assert [s["current"] for s in api.sessions(first)] == [False, True]


def test_a_spoofed_client_address_via_the_gateway_is_not_recorded(cluster: Cluster, browser: Browser) -> None:
    spoofed = {"X-Forwarded-For": "203.0.113.66", "X-Real-IP": "203.0.113.67", "Forwarded": "for=203.0.113.8"}
    session = login(browser, new_user(cluster), **spoofed)
    assert [s["ip"] for s in SessionApi(browser).sessions(session)] == ["127.0.0.1"]


def test_revoking_another_session_ends_it_and_only_it(cluster: Cluster, browser: Browser) -> None:
    api = SessionApi(browser)
    email = new_user(cluster)
    phone, laptop = login(browser, email), login(browser, email)
    response = api.revoke(laptop, api.current_handle(phone))
    assert response.status_code == 204
    assert "set-cookie" not in response.headers
    assert not api.is_live(phone)
    assert api.is_live(laptop)
    assert len(api.sessions(laptop)) == 1


def test_revoking_the_current_session_clears_its_cookie(cluster: Cluster, browser: Browser) -> None:
    api = SessionApi(browser)
    session = login(browser, new_user(cluster))
    response = api.revoke(session, api.current_handle(session))
    assert response.status_code == 204
    assert cleared_cookie(response)
    assert not api.is_live(session)


def test_revoking_a_session_that_is_not_the_callers_is_a_404(cluster: Cluster, browser: Browser) -> None:
    api = SessionApi(browser)
    mine, theirs = login(browser, new_user(cluster)), login(browser, new_user(cluster))
    for handle in (api.current_handle(theirs), "0" * 32, "not-a-handle"):
        assert_json_error(api.revoke(mine, handle), 404, "not_found")
    assert api.is_live(theirs)


def test_logout_all_ends_every_session_of_the_caller_only(cluster: Cluster, browser: Browser) -> None:
    api = SessionApi(browser)
    email = new_user(cluster)
    sessions = [login(browser, email) for _ in range(3)]
    bystander = login(browser, new_user(cluster))
    response = api.logout_all(sessions[0])
    assert response.status_code == 204
    assert cleared_cookie(response)
    assert not any(api.is_live(session) for session in sessions)
    assert api.is_live(bystander)


def test_password_change_renews_this_session_and_ends_the_others(cluster: Cluster, browser: Browser) -> None:
    api = SessionApi(browser)
    email = new_user(cluster)
    current, other = login(browser, email), login(browser, email)
    response = api.change_password(current, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    renewed_cookie = session_cookie(response).value
    csrf = response.json()["csrf_token"]
    assert renewed_cookie != current.cookie
    assert csrf != current.csrf_token
    assert not api.is_live(current)
    assert not api.is_live(other)
    renewed = current.__class__(email=email, cookie=renewed_cookie, csrf_token=csrf, user=current.user)
    assert api.is_live(renewed)
    assert browser.request_token(renewed).status_code == 200
    assert len(api.sessions(renewed)) == 1
    assert browser.post_login(email, PASSWORD).status_code == 401
    assert login(browser, email, NEW_PASSWORD).user == current.user


def test_password_change_needs_the_current_password_and_a_strong_new_one(
    cluster: Cluster, browser: Browser
) -> None:
    api = SessionApi(browser)
    email = new_user(cluster)
    session, other = login(browser, email), login(browser, email)
    assert_json_error(api.change_password(session, "not-the-password", NEW_PASSWORD), 403, "wrong_password")
    assert_json_error(api.change_password(session, PASSWORD, "short"), 422)
    assert_json_error(api.change_password(session, PASSWORD, PASSWORD), 422)
    malformed = api.unsafe("POST", "/auth/password", session, json={"new_password": NEW_PASSWORD})
    assert_json_error(malformed, 422)
    # Nothing changed: both sessions live, the old password still works.
    assert api.is_live(session)
    assert api.is_live(other)
    assert login(browser, email).email == email


def test_admin_lists_users_with_their_state(cluster: Cluster, browser: Browser) -> None:
    api = SessionApi(browser)
    email = new_user(cluster)
    response = api.users(browser.login(ADMIN))
    assert response.status_code == 200
    users = {user["email"]: user for user in response.json()["users"]}
    assert users[email]["role"] == "user"
    assert users[email]["disabled"] is False
    assert set(users[email]) == {"id", "email", "role", "disabled"}
    assert "password_hash" not in response.text


def test_admin_revokes_every_session_of_a_user(cluster: Cluster, browser: Browser) -> None:
    api = SessionApi(browser)
    admin = browser.login(ADMIN)
    email = new_user(cluster)
    sessions = [login(browser, email) for _ in range(2)]
    assert api.admin(admin, api.user_id(admin, email), "revoke-sessions").status_code == 204
    assert not any(api.is_live(session) for session in sessions)
    assert api.is_live(admin)
    assert login(browser, email).email == email


def test_a_disabled_user_loses_their_sessions_and_cannot_log_in_until_enabled(
    cluster: Cluster, browser: Browser
) -> None:
    api = SessionApi(browser)
    admin = browser.login(ADMIN)
    email = new_user(cluster)
    session = login(browser, email)
    user_id = api.user_id(admin, email)
    assert api.admin(admin, user_id, "disable").status_code == 204
    assert not api.is_live(session)
    refused, wrong = browser.post_login(email, PASSWORD), browser.post_login(email, "not-the-password")
    # Exactly what a wrong password gets: nothing says the account exists but is disabled.
    assert refused.status_code == wrong.status_code == 401
    assert refused.json() == wrong.json()
    assert "set-cookie" not in refused.headers
    assert next(u for u in api.users(admin).json()["users"] if u["id"] == user_id)["disabled"] is True
    assert api.admin(admin, user_id, "enable").status_code == 204
    assert login(browser, email).email == email


def test_admin_endpoints_refuse_ordinary_users(cluster: Cluster, browser: Browser) -> None:
    api = SessionApi(browser)
    user = login(browser, new_user(cluster))
    victim = login(browser, new_user(cluster))
    assert_json_error(api.users(user), 403, "forbidden")
    victim_id = victim.user["id"]
    for action in ("revoke-sessions", "disable", "enable"):
        assert_json_error(api.admin(user, victim_id, action), 403, "forbidden")
    assert api.is_live(victim)


def test_admin_actions_on_an_unknown_user_are_404(browser: Browser) -> None:
    api = SessionApi(browser)
    admin = browser.login(ADMIN)
    for action in ("revoke-sessions", "disable", "enable"):
        assert_json_error(api.admin(admin, "no-such-user", action), 404, "not_found")


def test_session_endpoints_without_a_session_are_401(cluster: Cluster, client: httpx.Client) -> None:
    for method, path in (
        ("GET", "/auth/sessions"),
        ("GET", "/auth/admin/users"),
        ("DELETE", "/auth/sessions/" + "0" * 32),
        ("POST", "/auth/logout-all"),
        ("POST", "/auth/password"),
    ):
        response = client.request(method, path, headers={"Origin": cluster.public_origin})
        assert_json_error(response, 401, "no_session")
