"""The user-visible flows through the gateway: login, token, orders, isolation, logout and CSRF."""

from __future__ import annotations

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.support.cluster import ADMIN, ALICE, BOB, Browser
from tests.support.http import SESSION_COOKIE, assert_json_error, bearer, session_cookie, unverified_parts
from tests.support.revocation import wait_until_refused

pytestmark = pytest.mark.e2e


def test_login_sets_a_host_only_secure_strict_http_only_session_cookie(browser: Browser) -> None:
    response = browser.post_login(ALICE, browser.password_for(ALICE))

    assert response.status_code == 200, response.text
    cookie = session_cookie(response)
    assert cookie.value
    assert "httponly" in cookie.attributes
    assert "secure" in cookie.attributes
    assert cookie.attributes.get("samesite", "").lower() == "strict"
    assert cookie.attributes.get("path") == "/"
    assert "domain" not in cookie.attributes  # __Host- cookies must be host-only
    body = response.json()
    assert body["user"]["email"] == ALICE
    assert body["user"]["role"] == "user"
    assert body["csrf_token"]
    assert "no-store" in response.headers.get("cache-control", "")


def test_login_with_a_wrong_password_is_refused_without_a_cookie(browser: Browser) -> None:
    response = browser.post_login(ALICE, "not-the-password-at-all")

    assert_json_error(response, 401)
    assert not response.headers.get_list("set-cookie")


def test_token_is_an_rs256_at_jwt_for_orders_bound_to_the_session(
    browser: Browser, client: httpx.Client, cluster: Cluster
) -> None:
    session = browser.login(ALICE)

    response = browser.request_token(session)

    assert response.status_code == 200, response.text
    assert "no-store" in response.headers.get("cache-control", "")
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    token = body["access_token"]
    header, claims = unverified_parts(token)
    assert set(header) == {"alg", "kid", "typ"}
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    published = client.get("/.well-known/jwks.json").json()["keys"]
    assert header["kid"] in {key["kid"] for key in published}
    assert claims["iss"] == cluster.public_origin
    assert claims["sub"] == session.user["id"]
    assert claims["aud"] == "orders"
    assert claims["exp"] == claims["iat"] + 300
    assert claims["nbf"] <= claims["iat"] + 1
    assert claims["jti"]
    assert claims["client_id"]
    assert claims["role"] == "user"
    assert claims["sid"]
    assert claims["sid"] != session.cookie
    assert session.cookie not in token


def test_each_token_has_its_own_jti(browser: Browser) -> None:
    session = browser.login(ALICE)

    first, second = browser.token(session), browser.token(session)

    assert unverified_parts(first)[1]["jti"] != unverified_parts(second)[1]["jti"]


def test_token_request_without_the_csrf_header_is_refused(browser: Browser, client: httpx.Client) -> None:
    session = browser.login(ALICE)
    headers = browser.unsafe_headers(session)
    del headers["X-CSRF-Token"]

    response = client.post("/auth/token", json={"audience": "orders"}, headers=headers)

    assert_json_error(response, 403)


def test_token_for_an_unknown_audience_is_refused(browser: Browser) -> None:
    session = browser.login(ALICE)

    response = browser.request_token(session, audience="payments")

    assert_json_error(response, 400)


def test_user_creates_lists_and_reads_own_orders_through_the_gateway(
    browser: Browser, client: httpx.Client
) -> None:
    session = browser.login(ALICE)
    token = browser.token(session)

    order = browser.create_order(token, item="green tea", quantity=3)
    listed = client.get("/api/orders", headers=bearer(token))
    fetched = client.get(f"/api/orders/{order['id']}", headers=bearer(token))

    assert order["item"] == "green tea"
    assert order["quantity"] == 3
    assert order["owner"] == session.user["id"]
    assert listed.status_code == 200, listed.text
    assert order["id"] in {entry["id"] for entry in listed.json()["orders"]}
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == order


def test_a_listing_pages_through_the_gateway_by_following_next(
    browser: Browser, client: httpx.Client
) -> None:
    token = browser.token(browser.login(BOB))
    placed = [browser.create_order(token, item=f"page {n}") for n in range(3)]

    first = client.get("/api/orders", params={"limit": "2"}, headers=bearer(token))
    assert first.status_code == 200, first.text
    page = first.json()
    assert [entry["id"] for entry in page["orders"]] == [placed[2]["id"], placed[1]["id"]]
    # A query-only reference: resolved against the path the client called (RFC 3986, 5.2).
    assert page["next"].startswith("?")
    following = first.url.join(page["next"])
    assert following.path == "/api/orders"
    second = client.get(following, headers=bearer(token))

    assert second.status_code == 200, second.text
    assert second.json()["orders"][0]["id"] == placed[0]["id"]


def test_api_without_a_token_is_unauthenticated(client: httpx.Client) -> None:
    response = client.get("/api/orders")

    assert_json_error(response, 401)
    assert response.headers.get("www-authenticate", "").startswith("Bearer")


def test_session_cookie_alone_does_not_open_the_api(browser: Browser, client: httpx.Client) -> None:
    session = browser.login(ALICE)

    response = client.get("/api/orders", headers={"Cookie": f"{SESSION_COOKIE}={session.cookie}"})

    assert_json_error(response, 401)


def test_another_user_cannot_list_or_fetch_someone_elses_order(
    browser: Browser, client: httpx.Client
) -> None:
    alice_token = browser.token(browser.login(ALICE))
    bob_token = browser.token(browser.login(BOB))
    alices = browser.create_order(alice_token, item="alice's secret tea")
    bobs = browser.create_order(bob_token, item="bob's coffee")

    listed = client.get("/api/orders", headers=bearer(bob_token))
    fetched = client.get(f"/api/orders/{alices['id']}", headers=bearer(bob_token))

    assert listed.status_code == 200, listed.text
    listed_ids = {entry["id"] for entry in listed.json()["orders"]}
    assert bobs["id"] in listed_ids
    assert alices["id"] not in listed_ids
    assert_json_error(fetched, 404)


def test_unknown_order_id_is_the_same_404_as_someone_elses(browser: Browser, client: httpx.Client) -> None:
    token = browser.token(browser.login(BOB))

    response = client.get(f"/api/orders/{'0' * 32}", headers=bearer(token))

    assert_json_error(response, 404)


def test_admin_lists_every_users_orders_with_all_true(browser: Browser, client: httpx.Client) -> None:
    alices = browser.create_order(browser.token(browser.login(ALICE)), item="for the admin to see")
    bobs = browser.create_order(browser.token(browser.login(BOB)), item="also for the admin")
    admin_session = browser.login(ADMIN)
    admin_token = browser.token(admin_session)

    everyone = client.get("/api/orders", params={"all": "true"}, headers=bearer(admin_token))
    own = client.get("/api/orders", headers=bearer(admin_token))

    assert unverified_parts(admin_token)[1]["role"] == "admin"
    assert everyone.status_code == 200, everyone.text
    assert {alices["id"], bobs["id"]} <= {entry["id"] for entry in everyone.json()["orders"]}
    assert own.status_code == 200, own.text
    assert {entry["owner"] for entry in own.json()["orders"]} <= {admin_session.user["id"]}


def test_ordinary_user_asking_for_all_orders_is_forbidden(browser: Browser, client: httpx.Client) -> None:
    token = browser.token(browser.login(ALICE))

    response = client.get("/api/orders", params={"all": "true"}, headers=bearer(token))

    assert_json_error(response, 403)


def test_logout_stops_new_tokens_and_minted_ones(browser: Browser, client: httpx.Client) -> None:
    session = browser.login(ALICE)
    token = browser.token(session)
    assert client.get("/api/orders", headers=bearer(token)).status_code == 200

    logged_out = browser.logout(session)
    refused = browser.request_token(session)

    assert logged_out.status_code == 200, logged_out.text
    assert logged_out.json() == {"status": "logged_out"}
    cleared = session_cookie(logged_out)
    assert cleared.value in ("", '""')
    assert_json_error(refused, 401)
    # The minted token is revoked too, within about a second (tests/e2e/test_revocation.py has
    # every other critical operation).
    wait_until_refused(browser.cluster, [token])


def test_login_with_a_presented_session_issues_a_new_one_and_ends_the_old(browser: Browser) -> None:
    first = browser.login(ALICE)

    second = browser.login(ALICE, headers={"Cookie": f"{SESSION_COOKIE}={first.cookie}"})

    assert second.cookie != first.cookie
    assert_json_error(browser.request_token(first), 401)
    assert browser.request_token(second).status_code == 200


@pytest.mark.parametrize(
    ("case", "overrides", "drop"),
    [
        ("no CSRF header", {}, "X-CSRF-Token"),
        ("wrong CSRF token", {"X-CSRF-Token": "not-the-token"}, None),
        ("cross-site origin", {"Origin": "http://127.0.0.1:9000"}, None),
        ("same-site origin on another port", {"Origin": "http://localhost:9000"}, None),
        ("foreign site", {"Origin": "https://evil.example"}, None),
        ("no Origin and no Sec-Fetch-Site", {}, "Origin"),
        ("no Origin and cross-site fetch", {"Sec-Fetch-Site": "cross-site"}, "Origin"),
    ],
)
def test_logout_that_fails_the_csrf_checks_is_refused_and_the_session_survives(
    browser: Browser, client: httpx.Client, case: str, overrides: dict[str, str], drop: str | None
) -> None:
    session = browser.login(ALICE)
    headers = {**browser.unsafe_headers(session), **overrides}
    if drop is not None:
        del headers[drop]

    response = client.post("/auth/logout", headers=headers)

    assert_json_error(response, 403)
    assert not response.headers.get_list("set-cookie"), case
    assert browser.request_token(session).status_code == 200, case


def test_me_reports_the_session_user(browser: Browser, client: httpx.Client) -> None:
    session = browser.login(ALICE)

    response = client.get("/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={session.cookie}"})

    assert response.status_code == 200, response.text
    assert response.json()["user"] == session.user


def test_discovery_metadata_names_the_issuer_and_its_jwks(client: httpx.Client, cluster: Cluster) -> None:
    metadata = client.get("/.well-known/openid-configuration")
    jwks = client.get("/.well-known/jwks.json")

    assert metadata.status_code == 200, metadata.text
    assert metadata.json()["issuer"] == cluster.public_origin
    assert metadata.json()["jwks_uri"] == f"{cluster.public_origin}/.well-known/jwks.json"
    assert jwks.status_code == 200, jwks.text
    assert "max-age=" in jwks.headers.get("cache-control", "")
    for key in jwks.json()["keys"]:
        assert set(key) == {"kty", "n", "e", "kid", "alg", "use"}
