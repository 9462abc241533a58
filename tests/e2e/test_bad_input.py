"""Hostile or broken requests through the gateway get a 4xx JSON error, never a 500 or a hang."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.cluster import ALICE, Browser
from tests.support.http import SESSION_COOKIE, assert_json_error, bearer

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}
TWO_MEGABYTES = 2 * 1024 * 1024


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


@pytest.fixture
def token(browser: Browser) -> str:
    return browser.token(browser.login(ALICE))


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        pytest.param(b'{"email": ', JSON, 400, id="truncated JSON"),
        pytest.param(b"[]", JSON, 400, id="JSON array"),
        pytest.param(b'"alice"', JSON, 400, id="JSON string"),
        pytest.param(b"\xff\xfe{}", JSON, 400, id="not UTF-8"),
        pytest.param(b'{"email": "a@b.c", "email": "x@y.z", "password": "p"}', JSON, 400, id="duplicate key"),
        pytest.param(b'{"email": NaN, "password": "p"}', JSON, 400, id="NaN"),
        pytest.param(
            b"email=a&password=b", {"Content-Type": "application/x-www-form-urlencoded"}, 415, id="form"
        ),
        pytest.param(
            b'{"email": "a", "password": "b"}', {"Content-Type": "text/plain"}, 415, id="text/plain"
        ),
        pytest.param(b'{"email": "a", "password": "b"}', {}, 415, id="no content type"),
        pytest.param(b"{}", JSON, 422, id="missing fields"),
        pytest.param(b'{"email": "alice@example.com"}', JSON, 422, id="missing password"),
        pytest.param(b'{"email": 1, "password": ["x"]}', JSON, 422, id="wrong types"),
        pytest.param(b'{"email": "a@b.c", "password": "p", "admin": true}', JSON, 422, id="unknown member"),
        pytest.param(b"{" + b" " * (100 * 1024) + b"}", JSON, 413, id="100 kB (over auth's limit)"),
        pytest.param(b"{" + b" " * TWO_MEGABYTES + b"}", JSON, 413, id="2 MB"),
    ],
)
def test_bad_login_bodies_get_a_json_4xx(
    client: httpx.Client, browser: Browser, content: bytes, headers: dict[str, str], status: int
) -> None:
    response = client.post(
        "/auth/login", content=content, headers={"Origin": browser.cluster.public_origin, **headers}
    )

    assert_json_error(response, status)


def test_a_2_mb_chunked_login_body_gets_413(client: httpx.Client, browser: Browser) -> None:
    response = client.post(
        "/auth/login",
        content=_chunks(TWO_MEGABYTES),
        headers={"Origin": browser.cluster.public_origin, **JSON},
    )

    assert_json_error(response, 413)


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        pytest.param(b'{"item": ', JSON, 400, id="truncated JSON"),
        pytest.param(b'{"item": "tea", "quantity": 1}', {"Content-Type": "text/plain"}, 415, id="text/plain"),
        pytest.param(b"{}", JSON, 422, id="missing fields"),
        pytest.param(b'{"item": "tea", "quantity": "2"}', JSON, 422, id="quantity as text"),
        pytest.param(b'{"item": "tea", "quantity": 1e309}', JSON, 422, id="huge quantity"),
        pytest.param(b'{"item": "tea", "quantity": 1, "owner": "x"}', JSON, 422, id="owner smuggled in"),
        pytest.param(b"{" + b" " * (20 * 1024) + b"}", JSON, 413, id="20 kB (over orders' limit)"),
        pytest.param(b"{" + b" " * TWO_MEGABYTES + b"}", JSON, 413, id="2 MB"),
    ],
)
def test_bad_order_bodies_get_a_json_4xx(
    client: httpx.Client, token: str, content: bytes, headers: dict[str, str], status: int
) -> None:
    response = client.post("/api/orders", content=content, headers={**bearer(token), **headers})

    assert_json_error(response, status)


def test_a_2_mb_order_body_without_a_token_is_refused_before_it_is_read(client: httpx.Client) -> None:
    response = client.post("/api/orders", content=b"{" + b" " * TWO_MEGABYTES + b"}", headers=JSON)

    assert response.status_code in (401, 413)
    assert_json_error(response, response.status_code)


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param(f"{SESSION_COOKIE}=garbage", id="garbage value"),
        pytest.param(f"{SESSION_COOKIE}=", id="empty value"),
        pytest.param(f"{SESSION_COOKIE}=abc.def", id="forged signature"),
        pytest.param(f'{SESSION_COOKIE}="\\"quoted\\""', id="quoted"),
        pytest.param(f"{SESSION_COOKIE}={'A' * 4000}", id="4 kB value"),
        pytest.param(";;; = ; ==; a=b=c; ;", id="no cookie at all, only separators"),
        pytest.param(f"{SESSION_COOKIE}=a; {SESSION_COOKIE}=b", id="twice"),
        pytest.param("session=abc", id="wrong name"),
    ],
)
def test_garbage_session_cookies_get_401(client: httpx.Client, browser: Browser, cookie: str) -> None:
    headers = {"Cookie": cookie, "Origin": browser.cluster.public_origin, "X-CSRF-Token": "x"}

    token_response = client.post("/auth/token", json={"audience": "orders"}, headers=headers)
    me_response = client.get("/auth/me", headers={"Cookie": cookie})

    assert_json_error(token_response, 401)
    assert_json_error(me_response, 401)


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        pytest.param("Bearer", 401, id="scheme only"),
        pytest.param("Bearer a.b.c", 401, id="three garbage segments"),
        pytest.param("Bearer a.b", 401, id="two segments"),
        pytest.param("Bearer x y", 401, id="two tokens"),
        pytest.param("Basic eHl6", 401, id="basic"),
        pytest.param("Basic xyz", 401, id="basic garbage"),
        pytest.param("eyJhbGciOiJub25lIn0.e30.", 401, id="no scheme, alg none"),
        pytest.param("Bearer eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.e30.", 401, id="alg none"),
        pytest.param("Bearer " + "a" * 5000, 401, id="5 kB token"),
        pytest.param("Bearer " + "a" * 20_000, 431, id="20 kB header"),
    ],
)
def test_garbage_authorization_headers_get_a_json_4xx(
    client: httpx.Client, authorization: str, status: int
) -> None:
    response = client.get("/api/orders", headers={"Authorization": authorization})

    body = assert_json_error(response, status)
    if status == 401:
        assert body["error"] in ("invalid_token", "unauthenticated")
        assert response.headers.get("www-authenticate", "").startswith("Bearer")


def test_two_authorization_headers_are_refused(client: httpx.Client, token: str) -> None:
    response = client.get(
        "/api/orders", headers=[("Authorization", f"Bearer {token}"), ("Authorization", "Bearer a.b.c")]
    )

    assert_json_error(response, 401)


def test_a_20_kb_cookie_header_gets_431(client: httpx.Client) -> None:
    response = client.get("/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={'a' * 20_000}"})

    assert_json_error(response, 431)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/nowhere", 404, id="unrouted path"),
        pytest.param("GET", "/api/ordersX", 404, id="prefix is not a segment"),
        pytest.param("GET", "/api/orders/%2e%2e/%2e%2e/auth/me", 400, id="encoded dot segments"),
        pytest.param("GET", "/api/orders%2fx", 400, id="encoded slash"),
        pytest.param("OPTIONS", "/auth/login", 405, id="CORS preflight"),
    ],
)
def test_bad_paths_and_methods_get_a_json_4xx(
    client: httpx.Client, method: str, path: str, status: int
) -> None:
    response = client.request(method, httpx.URL(client.base_url).copy_with(raw_path=path.encode()))

    assert_json_error(response, status)


@pytest.mark.parametrize("path", ["/api/orders", "/auth/token"])
def test_with_cors_off_a_preflight_from_another_origin_is_refused_as_before(
    client: httpx.Client, path: str
) -> None:
    # CORS_ALLOWED_ORIGINS is unset by default: no route approves another origin's preflight.
    preflight = {
        "Origin": "http://localhost:5173",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }

    response = client.options(path, headers=preflight)

    assert_json_error(response, 405)
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    assert "vary" not in response.headers
