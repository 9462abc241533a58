"""The orders app end to end in one process: real SQLite file, real verifier, real JWKS over HTTP."""

from __future__ import annotations

import contextlib
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from services.orders.app import MAX_BODY_BYTES, create_app
from services.orders.settings import OrdersSettings
from services.orders.store import open_order_store
from tests.support.servers import ServerThread

ISSUER = "http://localhost:8000"
KID = "orders-test-key"

Mint = Callable[..., str]


@dataclass
class JWKSServer:
    """A JWKS endpoint on loopback that records every request it answers."""

    url: str
    hits: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": KID})


@pytest.fixture(scope="module")
def jwks_server(signing_key: RSAKey) -> Iterator[JWKSServer]:
    public = {**signing_key.as_dict(private=False), "alg": "RS256", "use": "sig"}
    hits: list[str] = []

    async def jwks(request: Request) -> Response:
        hits.append(request.url.path)
        return JSONResponse({"keys": [public]})

    app = Starlette(routes=[Route("/.well-known/jwks.json", jwks)])
    with ServerThread(app) as server:
        yield JWKSServer(url=f"{server.url}/.well-known/jwks.json", hits=hits)


def mint_token(
    key: RSAKey,
    *,
    sub: str = "alice",
    role: str = "user",
    aud: str = "orders",
    iss: str = ISSUER,
    kid: str = KID,
    age: int = 0,
) -> str:
    """An access token shaped the way auth mints them; ``age`` moves it into the past."""
    iat = int(time.time()) - age
    claims = {
        "iss": iss,
        "sub": sub,
        "aud": aud,
        "iat": iat,
        "nbf": iat,
        "exp": iat + 300,
        "jti": uuid.uuid4().hex,
        "role": role,
        "client_id": "orders-tests",
        "sid": uuid.uuid4().hex,
    }
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, key, algorithms=["RS256"])


@pytest.fixture
def mint(signing_key: RSAKey) -> Mint:
    def _mint(**overrides: Any) -> str:
        return mint_token(signing_key, **overrides)

    return _mint


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A directory that does not exist yet: the service must create it.
    return tmp_path / "var" / "data" / "orders.sqlite3"


def settings_for(jwks_url: str, db_path: Path, **env: str) -> OrdersSettings:
    return OrdersSettings.from_env(
        {"ORDERS_DB_PATH": str(db_path), "JWKS_URL": jwks_url, "TOKEN_ISSUER": ISSUER, **env}
    )


@pytest.fixture
def client(jwks_server: JWKSServer, db_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(jwks_server.url, db_path))) as client:
        yield client


def place(client: TestClient, token: str, item: str = "tea", quantity: int = 1) -> dict[str, Any]:
    response = client.post("/orders", json={"item": item, "quantity": quantity}, headers=bearer(token))
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


def listing(client: TestClient, token: str, query: str = "") -> list[dict[str, Any]]:
    response = client.get(f"/orders{query}", headers=bearer(token))
    assert response.status_code == 200, response.text
    orders: list[dict[str, Any]] = response.json()["orders"]
    return orders


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str)
    return body


def test_a_new_order_is_201_with_its_public_shape(client: TestClient, mint: Mint) -> None:
    response = client.post("/orders", json={"item": "  green tea ", "quantity": 3}, headers=bearer(mint()))
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    order = response.json()
    assert set(order) == {"id", "item", "quantity", "owner", "created_at"}
    assert (order["item"], order["quantity"], order["owner"]) == ("green tea", 3, "alice")
    assert re.fullmatch(r"[0-9a-f]{32}", order["id"])
    assert order["created_at"].endswith("Z")
    created = datetime.fromisoformat(order["created_at"])
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60


def test_the_owner_reads_an_order_back_by_id(client: TestClient, mint: Mint) -> None:
    token = mint()
    order = place(client, token, "coffee", 2)
    response = client.get(f"/orders/{order['id']}", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == order


def test_a_listing_holds_only_the_callers_orders_newest_first(client: TestClient, mint: Mint) -> None:
    alice, bob = mint(sub="alice"), mint(sub="bob")
    first, second, third = (place(client, alice, item) for item in ("one", "two", "three"))
    place(client, bob, "bob's")
    assert listing(client, alice) == [third, second, first]
    assert [order["item"] for order in listing(client, bob)] == ["bob's"]
    assert listing(client, mint(sub="carol")) == []


def test_two_orders_get_different_unguessable_ids(client: TestClient, mint: Mint) -> None:
    token = mint()
    first, second = place(client, token), place(client, token)
    assert first["id"] != second["id"]


def test_the_owner_is_the_tokens_subject_and_cannot_be_set_in_the_body(
    client: TestClient, mint: Mint
) -> None:
    response = client.post(
        "/orders", json={"item": "tea", "quantity": 1, "owner": "bob"}, headers=bearer(mint(sub="alice"))
    )
    body = assert_error(response, 422, "validation_failed")
    assert "owner" in body["detail"]
    assert listing(client, mint(sub="bob")) == []


def test_another_users_order_is_404_exactly_like_a_missing_one(client: TestClient, mint: Mint) -> None:
    order = place(client, mint(sub="alice"))
    theirs = client.get(f"/orders/{order['id']}", headers=bearer(mint(sub="bob")))
    missing = client.get(f"/orders/{uuid.uuid4().hex}", headers=bearer(mint(sub="bob")))
    assert_error(theirs, 404, "not_found")
    assert theirs.json() == missing.json()
    assert theirs.headers.get("www-authenticate") is None


def test_an_admin_reads_only_their_own_orders_by_id(client: TestClient, mint: Mint) -> None:
    order = place(client, mint(sub="alice"))
    response = client.get(f"/orders/{order['id']}", headers=bearer(mint(sub="root", role="admin")))
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    "order_id",
    ["abc", "A" * 32, "0" * 33, "12345678-1234-4234-8234-123456789abc", "'%20OR%201=1%20--", "%00"],
)
def test_a_malformed_order_id_is_404(client: TestClient, mint: Mint, order_id: str) -> None:
    assert_error(client.get(f"/orders/{order_id}", headers=bearer(mint())), 404, "not_found")


def test_an_admin_lists_every_users_orders_with_all_true(client: TestClient, mint: Mint) -> None:
    admin = mint(sub="root", role="admin")
    alices = place(client, mint(sub="alice"), "alice's")
    bobs = place(client, mint(sub="bob"), "bob's")
    own = place(client, admin, "root's")
    assert listing(client, admin, "?all=true") == [own, bobs, alices]
    assert listing(client, admin) == [own]
    assert listing(client, admin, "?all=false") == [own]


def test_a_non_admin_asking_for_all_orders_gets_403(client: TestClient, mint: Mint) -> None:
    place(client, mint(sub="bob"))
    response = client.get("/orders?all=true", headers=bearer(mint(sub="alice", role="user")))
    assert_error(response, 403, "forbidden")


@pytest.mark.parametrize("query", ["?all=1", "?all=yes", "?all=", "?all=true&all=true"])
def test_an_all_flag_other_than_true_or_false_is_422(client: TestClient, mint: Mint, query: str) -> None:
    body = assert_error(
        client.get(f"/orders{query}", headers=bearer(mint(role="admin"))), 422, "validation_failed"
    )
    assert "all" in body["detail"]


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"quantity": 1}, "item"),
        ({"item": None, "quantity": 1}, "item"),
        ({"item": 7, "quantity": 1}, "item"),
        ({"item": ["tea"], "quantity": 1}, "item"),
        ({"item": "", "quantity": 1}, "item"),
        ({"item": "   ", "quantity": 1}, "item"),
        ({"item": "x" * 201, "quantity": 1}, "item"),
        ({"item": "tea\n", "quantity": 1}, "item"),
        ({"item": "tea\x00", "quantity": 1}, "item"),
        ({"item": "tea\x1b[2J", "quantity": 1}, "item"),
        ({"item": "tea"}, "quantity"),
        ({"item": "tea", "quantity": None}, "quantity"),
        ({"item": "tea", "quantity": True}, "quantity"),
        ({"item": "tea", "quantity": 1.0}, "quantity"),
        ({"item": "tea", "quantity": "1"}, "quantity"),
        ({"item": "tea", "quantity": 0}, "quantity"),
        ({"item": "tea", "quantity": -5}, "quantity"),
        ({"item": "tea", "quantity": 1001}, "quantity"),
        ({"item": "tea", "quantity": 10**40}, "quantity"),
        ({"item": "tea", "quantity": 1, "price": 0}, "price"),
        ({"item": "tea", "quantity": 1, "id": "f" * 32}, "id"),
        ({}, "item"),
    ],
)
def test_an_invalid_order_is_422_naming_the_field_and_stores_nothing(
    client: TestClient, mint: Mint, body: dict[str, Any], field_name: str
) -> None:
    token = mint()
    response = client.post("/orders", json=body, headers=bearer(token))
    error = assert_error(response, 422, "validation_failed")
    assert field_name in error["detail"]
    assert listing(client, token) == []


def test_a_lone_surrogate_in_the_item_is_422_not_a_database_error(client: TestClient, mint: Mint) -> None:
    response = client.post(
        "/orders",
        content=b'{"item": "tea\\ud800", "quantity": 1}',
        headers={**bearer(mint()), "Content-Type": "application/json"},
    )
    assert "item" in assert_error(response, 422, "validation_failed")["detail"]


@pytest.mark.parametrize(
    ("item", "quantity"), [("x" * 200, 1), ("y", 1000), ("注文 ☕", 500), ("  padded  ", 2)]
)
def test_values_at_the_limits_are_accepted(client: TestClient, mint: Mint, item: str, quantity: int) -> None:
    order = place(client, mint(), item, quantity)
    assert (order["item"], order["quantity"]) == (item.strip(), quantity)


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b"",
        b"[]",
        b'"tea"',
        b"null",
        b'{"item": "a", "item": "b", "quantity": 1}',
        b'{"quantity": NaN}',
        b"\xff",
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(client: TestClient, mint: Mint, content: bytes) -> None:
    response = client.post(
        "/orders", content=content, headers={**bearer(mint()), "Content-Type": "application/json"}
    )
    assert_error(response, 400, "malformed_json")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None]
)
def test_a_body_that_is_not_declared_json_is_415(
    client: TestClient, mint: Mint, content_type: str | None
) -> None:
    headers = bearer(mint())
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = client.post("/orders", content=b'{"item": "tea", "quantity": 1}', headers=headers)
    assert_error(response, 415, "unsupported_media_type")


def test_a_json_content_type_with_a_charset_is_accepted(client: TestClient, mint: Mint) -> None:
    response = client.post(
        "/orders",
        content=b'{"item": "tea", "quantity": 1}',
        headers={**bearer(mint()), "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


def test_a_huge_body_is_413_and_stores_nothing(client: TestClient, mint: Mint) -> None:
    token = mint()
    huge = {"item": "x" * (MAX_BODY_BYTES + 1), "quantity": 1}
    assert_error(client.post("/orders", json=huge, headers=bearer(token)), 413, "payload_too_large")
    assert listing(client, token) == []


def test_a_huge_body_sent_without_a_length_is_413(client: TestClient, mint: Mint) -> None:
    token = mint()
    chunks = iter([b'{"item": "', b"x" * MAX_BODY_BYTES, b'", "quantity": 1}'])
    response = client.post(
        "/orders", content=chunks, headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")
    assert listing(client, token) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/orders"), ("POST", "/orders"), ("GET", f"/orders/{'a' * 32}"), ("GET", "/whoami")],
)
def test_every_api_route_without_a_token_is_401(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, json={"item": "tea", "quantity": 1})
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


def test_an_unauthenticated_post_is_refused_before_its_body_is_judged(client: TestClient) -> None:
    response = client.post("/orders", content=b"not json", headers={"Content-Type": "text/plain"})
    assert_error(response, 401, "unauthenticated")


def test_a_token_minted_for_another_audience_is_401(client: TestClient, mint: Mint) -> None:
    response = client.get("/orders", headers=bearer(mint(aud="gateway")))
    assert_error(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda key: "not-a-token", id="garbage"),
        pytest.param(lambda key: mint_token(key) + "x", id="tampered-signature"),
        pytest.param(lambda key: mint_token(RSAKey.generate_key(2048)), id="foreign-key-same-kid"),
        pytest.param(lambda key: mint_token(key, kid="unknown-kid"), id="unknown-kid"),
        pytest.param(lambda key: mint_token(key, age=400), id="expired"),
        pytest.param(lambda key: mint_token(key, iss="http://evil.example"), id="wrong-issuer"),
    ],
)
def test_a_bad_token_is_401_with_an_rfc6750_challenge(
    client: TestClient, signing_key: RSAKey, make_token: Callable[[RSAKey], str]
) -> None:
    token = make_token(signing_key)
    for method, path in (("GET", "/orders"), ("POST", "/orders"), ("GET", "/whoami")):
        response = client.request(method, path, json={"item": "tea", "quantity": 1}, headers=bearer(token))
        assert_error(response, 401, "invalid_token")
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert token not in response.text


def test_whoami_returns_the_subject_and_role_only(client: TestClient, mint: Mint) -> None:
    response = client.get("/whoami", headers=bearer(mint(sub="root", role="admin")))
    assert response.status_code == 200
    assert response.json() == {"sub": "root", "role": "admin"}


def test_health_and_readiness_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert set(checks) == {"jwks", "revocations", "database"}
    assert checks["database"] is True
    assert checks["jwks"]["ready"] is True
    assert checks["jwks"]["keys"] == 1


def test_orders_survive_a_restart_on_the_same_database_file(
    jwks_server: JWKSServer, db_path: Path, mint: Mint
) -> None:
    token = mint()
    settings = settings_for(jwks_server.url, db_path)
    with TestClient(create_app(settings)) as first_run:
        placed = [place(first_run, token, "before"), place(first_run, token, "restart")]
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with TestClient(create_app(settings)) as second_run:
        assert listing(second_run, token) == placed[::-1]
        assert second_run.get(f"/orders/{placed[0]['id']}", headers=bearer(token)).json() == placed[0]
        newer = place(second_run, token, "after")
        assert listing(second_run, token)[0] == newer


def test_tokens_are_verified_locally_after_one_jwks_fetch(
    jwks_server: JWKSServer, db_path: Path, mint: Mint
) -> None:
    before = len(jwks_server.hits)
    with TestClient(create_app(settings_for(jwks_server.url, db_path))) as client:
        for sub in ("alice", "bob", "carol"):
            token = mint(sub=sub)
            place(client, token)
            listing(client, token)
            assert client.get("/whoami", headers=bearer(token)).status_code == 200
    assert len(jwks_server.hits) - before == 1


async def test_the_store_closes_its_connection_when_the_lifespan_ends(db_path: Path) -> None:
    async with open_order_store(db_path) as store:
        assert store.ping() is True
    assert store.ping() is False


def test_without_signing_keys_requests_are_503_and_readyz_says_why(db_path: Path, mint: Mint) -> None:
    # A bound socket that never listens: connections to it are refused at once.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        jwks_url = f"http://127.0.0.1:{closed.getsockname()[1]}/.well-known/jwks.json"
        with TestClient(create_app(settings_for(jwks_url, db_path))) as client:
            assert_error(client.get("/orders", headers=bearer(mint())), 503, "service_unavailable")
            response = client.get("/readyz")
            assert_error(response, 503, "not_ready")
            checks = response.json()["checks"]
            assert checks["jwks"]["ready"] is False
            assert checks["database"] is True


def page_of(client: TestClient, token: str, query: str = "") -> dict[str, Any]:
    response = client.get(f"/orders{query}", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert set(body) == {"orders", "next"}
    return body


def every_page(client: TestClient, token: str, query: str = "") -> list[dict[str, Any]]:
    """The pages of a listing, following each ``next`` link as a client resolves it."""
    pages = [page_of(client, token, query)]
    while pages[-1]["next"] is not None:
        link = pages[-1]["next"]
        assert link.startswith("?")
        pages.append(page_of(client, token, link))
    return pages


def test_an_empty_listing_is_one_page_with_no_next_link(client: TestClient, mint: Mint) -> None:
    assert page_of(client, mint()) == {"orders": [], "next": None}


def test_a_listing_that_fills_exactly_one_page_has_no_next_link(client: TestClient, mint: Mint) -> None:
    token = mint()
    placed = [place(client, token, f"item {n}") for n in range(3)]
    assert page_of(client, token, "?limit=3") == {"orders": placed[::-1], "next": None}


def test_following_next_links_returns_every_order_once_newest_first(client: TestClient, mint: Mint) -> None:
    token = mint()
    placed = [place(client, token, f"item {n}") for n in range(7)]
    pages = every_page(client, token, "?limit=3")
    assert [len(page["orders"]) for page in pages] == [3, 3, 1]
    assert [order for page in pages for order in page["orders"]] == placed[::-1]
    assert pages[-1]["next"] is None


def test_the_next_link_keeps_the_page_size(client: TestClient, mint: Mint) -> None:
    token = mint()
    for n in range(3):
        place(client, token, f"item {n}")
    link = page_of(client, token, "?limit=2")["next"]
    assert link.endswith("&limit=2")


def insert_directly(db_path: Path, owner: str, count: int) -> None:
    """``count`` older orders for ``owner``, written to the file without the rate limit's wait."""
    with contextlib.closing(sqlite3.connect(db_path)) as connection, connection:
        connection.executemany(
            "INSERT INTO orders (id, owner, item, quantity, created_at) VALUES (?, ?, ?, 1, ?)",
            [(uuid.uuid4().hex, owner, f"bulk {n}", f"2020-01-01T00:00:00.{n:06d}Z") for n in range(count)],
        )


def test_the_default_page_is_20_orders(client: TestClient, mint: Mint, db_path: Path) -> None:
    token = mint(sub="alice")
    newest = place(client, token)
    insert_directly(db_path, "alice", 20)
    first = page_of(client, token)
    assert len(first["orders"]) == 20
    assert first["orders"][0] == newest
    assert first["next"] is not None
    assert [order["item"] for order in page_of(client, token, first["next"])["orders"]] == ["bulk 0"]


def test_orders_placed_after_the_first_page_do_not_shift_the_following_ones(
    client: TestClient, mint: Mint
) -> None:
    token = mint()
    placed = [place(client, token, f"item {n}") for n in range(4)]
    first = page_of(client, token, "?limit=2")
    place(client, token, "newer")
    second = page_of(client, token, first["next"])
    assert second["orders"] == placed[1::-1]


def test_a_cursor_cannot_page_through_another_users_orders(client: TestClient, mint: Mint) -> None:
    alice, bob = mint(sub="alice"), mint(sub="bob")
    for n in range(3):
        place(client, alice, f"alice {n}")
    place(client, bob, "bob's")
    link = page_of(client, alice, "?limit=1")["next"]
    body = assert_error(client.get(f"/orders{link}", headers=bearer(bob)), 422, "validation_failed")
    assert "cursor" in body["detail"]


def test_an_admin_pages_through_everyones_orders_with_all_true(client: TestClient, mint: Mint) -> None:
    admin = mint(sub="root", role="admin")
    placed = [place(client, mint(sub=f"user{n}"), f"item {n}") for n in range(5)]
    pages = every_page(client, admin, "?all=true&limit=2")
    assert [len(page["orders"]) for page in pages] == [2, 2, 1]
    assert all("all=true" in page["next"] for page in pages[:-1])
    assert [order for page in pages for order in page["orders"]] == placed[::-1]


def test_a_user_cannot_follow_an_admins_full_listing_link(client: TestClient, mint: Mint) -> None:
    for n in range(3):
        place(client, mint(sub=f"user{n}"))
    link = page_of(client, mint(sub="root", role="admin"), "?all=true&limit=1")["next"]
    assert_error(client.get(f"/orders{link}", headers=bearer(mint(sub="user0"))), 403, "forbidden")
    without_all = link.replace("all=true&", "")
    body = assert_error(
        client.get(f"/orders{without_all}", headers=bearer(mint(sub="root", role="admin"))),
        422,
        "validation_failed",
    )
    assert "cursor" in body["detail"]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1e2", "10&limit=10"])
def test_a_limit_out_of_bounds_is_422_naming_limit(client: TestClient, mint: Mint, limit: str) -> None:
    body = assert_error(
        client.get(f"/orders?limit={limit}", headers=bearer(mint())), 422, "validation_failed"
    )
    assert "limit" in body["detail"]


def test_the_largest_page_is_100_orders(client: TestClient, mint: Mint, db_path: Path) -> None:
    token = mint(sub="alice")
    place(client, token)
    insert_directly(db_path, "alice", 150)
    assert len(page_of(client, token, "?limit=100")["orders"]) == 100


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "A" * 80, "%ff%fe", "x" * 5000, "", "..%2F..%2Fetc%2Fpasswd"],
)
def test_a_malformed_cursor_is_422_naming_cursor_never_500(
    client: TestClient, mint: Mint, cursor: str
) -> None:
    body = assert_error(
        client.get(f"/orders?cursor={cursor}", headers=bearer(mint())), 422, "validation_failed"
    )
    assert "cursor" in body["detail"]


def test_a_tampered_cursor_is_422(client: TestClient, mint: Mint) -> None:
    token = mint()
    for _n in range(3):
        place(client, token)
    link = page_of(client, token, "?limit=1")["next"]
    cursor = parse_qs(link[1:])["cursor"][0]
    for index in (0, len(cursor) // 2, len(cursor) - 1):
        changed = cursor[:index] + ("B" if cursor[index] != "B" else "C") + cursor[index + 1 :]
        assert_error(client.get(f"/orders?cursor={changed}", headers=bearer(token)), 422, "validation_failed")


def test_cursors_stay_valid_across_a_restart_on_the_same_file(
    jwks_server: JWKSServer, db_path: Path, mint: Mint
) -> None:
    token = mint()
    settings = settings_for(jwks_server.url, db_path)
    with TestClient(create_app(settings)) as first_run:
        placed = [place(first_run, token, f"item {n}") for n in range(3)]
        link = page_of(first_run, token, "?limit=1")["next"]
    with TestClient(create_app(settings)) as second_run:
        assert page_of(second_run, token, link)["orders"] == [placed[1]]


@pytest.mark.parametrize("item", ["admin\u202e", "tea\u200b", "\u2066x\u2069", "\ufefftea", "a\u2028b"])
def test_an_item_with_invisible_or_bidi_characters_is_422_naming_item(
    client: TestClient, mint: Mint, item: str
) -> None:
    token = mint()
    body = assert_error(
        client.post("/orders", json={"item": item, "quantity": 1}, headers=bearer(token)),
        422,
        "validation_failed",
    )
    assert "item" in body["detail"]
    assert listing(client, token) == []


def test_creation_beyond_the_burst_is_429_with_retry_after(
    jwks_server: JWKSServer, db_path: Path, mint: Mint
) -> None:
    settings = settings_for(jwks_server.url, db_path, ORDERS_CREATE_RATE="0.5", ORDERS_CREATE_BURST="3")
    with TestClient(create_app(settings)) as client:
        token = mint(sub="mallory")
        for _ in range(3):
            place(client, token)
        response = client.post("/orders", json={"item": "tea", "quantity": 1}, headers=bearer(token))
        assert_error(response, 429, "too_many_requests")
        assert response.headers["retry-after"] == "2"
        assert len(listing(client, token)) == 3
        # Another user's budget is untouched.
        place(client, mint(sub="alice"))


def test_creation_beyond_the_quota_is_409_and_stores_nothing(
    jwks_server: JWKSServer, db_path: Path, mint: Mint
) -> None:
    settings = settings_for(jwks_server.url, db_path, ORDERS_MAX_PER_USER="2")
    with TestClient(create_app(settings)) as client:
        token = mint(sub="mallory")
        place(client, token)
        place(client, token)
        response = client.post("/orders", json={"item": "tea", "quantity": 1}, headers=bearer(token))
        body = assert_error(response, 409, "order_quota_exceeded")
        assert "2" in body["detail"]
        assert len(listing(client, token)) == 2
        place(client, mint(sub="alice"))
