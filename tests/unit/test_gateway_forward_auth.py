"""Forward-auth and configured routes on a real gateway, in front of a fake JWKS and a fake upstream.

The gateway, the fake auth (JWKS only) and a recording upstream run under uvicorn on free
127.0.0.1 ports; every request is real HTTP.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from tests.support.servers import ServerThread
from tests.support.servers import jwks_server as serve_jwks

ISSUER = "http://localhost:8000"
KID = "fa-key-1"
# invoices is routed (GATEWAY_ROUTES) but not offered to forward-auth; wiki is forward-auth only.
FORWARD_AUTH_ENV = {
    "FORWARD_AUTH_AUDIENCES": "wiki,orders",
    "GATEWAY_ROUTES": "/api/invoices=invoices/invoices@invoices",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": KID})


@pytest.fixture(scope="module")
def upstream_seen() -> list[dict[str, Any]]:
    return []


@pytest.fixture(scope="module")
def jwks_server(signing_key: RSAKey) -> Iterator[ServerThread]:
    with serve_jwks(signing_key) as server:
        yield server


@pytest.fixture(scope="module")
def upstream(upstream_seen: list[dict[str, Any]]) -> Iterator[ServerThread]:
    """One recording server standing in for auth, orders and invoices alike."""

    async def record(request: Request) -> Response:
        entry = {"path": request.url.path, "headers": dict(request.headers)}
        upstream_seen.append(entry)
        return JSONResponse(entry)

    app = Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST"])])
    with ServerThread(app) as server:
        yield server


def _settings(jwks_server: ServerThread, upstream: ServerThread, **environ: str) -> GatewaySettings:
    return GatewaySettings.from_env(
        {
            "AUTH_URL": upstream.url,
            "ORDERS_URL": upstream.url,
            "INVOICES_URL": upstream.url,
            "JWKS_URL": f"{jwks_server.url}/.well-known/jwks.json",
            **environ,
        }
    )


@pytest.fixture(scope="module")
def gateway(jwks_server: ServerThread, upstream: ServerThread) -> Iterator[ServerThread]:
    with ServerThread(
        create_app(_settings(jwks_server, upstream, **FORWARD_AUTH_ENV)), lifespan="on"
    ) as server:
        yield server


@pytest.fixture
def client(gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as http:
        yield http


def mint(key: RSAKey, audience: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "sid": "session-handle-1",
        "role": "user",
        **claims,
    }
    return jwt.encode({"alg": "RS256", "kid": KID, "typ": "at+jwt"}, payload, key)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response, challenge: str = 'Bearer error="invalid_token"') -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == challenge
    assert response.content == b""
    assert not any(name.lower().startswith("x-auth-") for name in response.headers)


def test_a_valid_token_is_answered_200_with_the_identity_in_headers_and_no_body(
    client: httpx.Client, signing_key: RSAKey
) -> None:
    response = client.get("/forward-auth/wiki", headers=bearer(mint(signing_key, "wiki", role="admin")))

    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["x-auth-subject"] == "user-1"
    assert response.headers["x-auth-role"] == "admin"
    assert response.headers["x-auth-session"] == "session-handle-1"
    assert response.headers["x-auth-audience"] == "wiki"
    assert response.headers["cache-control"] == "no-store"


def test_a_claim_the_token_lacks_has_no_header(client: httpx.Client, signing_key: RSAKey) -> None:
    token = mint(signing_key, "wiki", role=None, sid=None)
    response = client.get("/forward-auth/wiki", headers=bearer(token))

    assert response.status_code == 200
    assert "x-auth-role" not in response.headers
    assert "x-auth-session" not in response.headers


def test_identity_headers_the_client_sends_change_nothing(client: httpx.Client, signing_key: RSAKey) -> None:
    spoofed = {"X-Auth-Subject": "admin", "X-Auth-Role": "admin", "X-Original-URI": "/admin"}
    response = client.get("/forward-auth/wiki", headers={**spoofed, **bearer(mint(signing_key, "wiki"))})

    assert response.status_code == 200
    assert response.headers.get_list("x-auth-subject") == ["user-1"]
    assert response.headers.get_list("x-auth-role") == ["user"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_envoy_style_requests_with_the_original_method_and_path_appended_are_answered(
    client: httpx.Client, signing_key: RSAKey, method: str
) -> None:
    response = client.request(
        method, "/forward-auth/wiki/pages/7?edit=1", headers=bearer(mint(signing_key, "wiki"))
    )

    assert response.status_code == 200
    assert response.headers["x-auth-audience"] == "wiki"


def test_no_token_is_401_with_a_bare_bearer_challenge_and_no_body(client: httpx.Client) -> None:
    assert_refused(client.get("/forward-auth/wiki"), challenge="Bearer")


def test_a_token_for_another_audience_is_refused(client: httpx.Client, signing_key: RSAKey) -> None:
    assert_refused(client.get("/forward-auth/wiki", headers=bearer(mint(signing_key, "orders"))))


def test_an_expired_token_is_refused(client: httpx.Client, signing_key: RSAKey) -> None:
    old = int(time.time()) - 3600
    token = mint(signing_key, "wiki", iat=old, nbf=old, exp=old + 300)
    assert_refused(client.get("/forward-auth/wiki", headers=bearer(token)))


def test_a_token_signed_by_another_key_is_refused(client: httpx.Client) -> None:
    forger = RSAKey.generate_key(2048, parameters={"kid": KID})
    assert_refused(client.get("/forward-auth/wiki", headers=bearer(mint(forger, "wiki"))))


def test_a_malformed_authorization_header_is_refused(client: httpx.Client) -> None:
    assert_refused(client.get("/forward-auth/wiki", headers={"Authorization": "Basic dXNlcjpwYXNz"}))


def test_a_claim_that_cannot_be_a_header_value_is_refused_not_mangled(
    client: httpx.Client, signing_key: RSAKey
) -> None:
    for sub in ("user\r\nX-Auth-Role: admin", "usér"):
        assert_refused(client.get("/forward-auth/wiki", headers=bearer(mint(signing_key, "wiki", sub=sub))))


def test_an_audience_not_offered_to_forward_auth_is_404_with_no_body(
    client: httpx.Client, signing_key: RSAKey
) -> None:
    # invoices has a verifier (the gateway routes it) but was not listed in FORWARD_AUTH_AUDIENCES.
    for audience in ("invoices", "nobody"):
        response = client.get(f"/forward-auth/{audience}", headers=bearer(mint(signing_key, audience)))
        assert response.status_code == 404
        assert response.content == b""


def test_forward_auth_uses_the_routes_verifier_for_a_shared_audience(
    client: httpx.Client, signing_key: RSAKey
) -> None:
    def verified() -> int:
        count: int = client.get("/readyz").json()["checks"]["jwks"]["audiences"]["orders"]["verified"]
        return count

    before = verified()
    token = mint(signing_key, "orders")
    assert client.get("/forward-auth/orders", headers=bearer(token)).status_code == 200
    assert client.get("/api/orders/x", headers=bearer(token)).status_code == 200
    # One verifier per audience: both verdicts are counted by it (the second from its memory).
    assert verified() == before + 2


def _public_answer(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, response.json()


def test_a_peer_not_allowed_to_ask_gets_what_the_route_table_answers(
    jwks_server: ServerThread, upstream: ServerThread, signing_key: RSAKey
) -> None:
    settings = _settings(jwks_server, upstream, **FORWARD_AUTH_ENV, FORWARD_AUTH_ALLOWED_FROM="10.9.0.0/16")
    with (
        ServerThread(create_app(settings), lifespan="on") as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as http,
    ):
        token = mint(signing_key, "wiki")
        asked = http.get("/forward-auth/wiki", headers=bearer(token))
        unrouted = http.get("/no-such-route/wiki", headers=bearer(token))

    assert _public_answer(asked) == _public_answer(unrouted) == (404, unrouted.json())
    assert unrouted.json()["error"] == "not_found"
    assert not any(name.startswith("x-auth-") for name in asked.headers)


def test_forward_auth_is_off_unless_audiences_are_configured(
    jwks_server: ServerThread, upstream: ServerThread, signing_key: RSAKey
) -> None:
    with (
        ServerThread(create_app(_settings(jwks_server, upstream)), lifespan="on") as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as http,
    ):
        response = http.get("/forward-auth/orders", headers=bearer(mint(signing_key, "orders")))

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_without_keys_the_verdict_is_503_with_no_body_never_a_401(
    upstream: ServerThread, signing_key: RSAKey
) -> None:
    settings = GatewaySettings.from_env(
        {
            "AUTH_URL": upstream.url,
            "ORDERS_URL": upstream.url,
            "JWKS_URL": f"http://127.0.0.1:{_free_port()}/.well-known/jwks.json",
            "JWKS_TIMEOUT_SECONDS": "0.5",
            "FORWARD_AUTH_AUDIENCES": "wiki",
        }
    )
    with (
        ServerThread(create_app(settings), lifespan="on") as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as http,
    ):
        response = http.get("/forward-auth/wiki", headers=bearer(mint(signing_key, "wiki")))

    assert response.status_code == 503
    assert response.content == b""
    assert response.headers["retry-after"]


def test_a_configured_route_is_verified_for_its_audience_and_proxied(
    client: httpx.Client, signing_key: RSAKey, upstream_seen: list[dict[str, Any]]
) -> None:
    assert client.get("/api/invoices/7").status_code == 401
    assert client.get("/api/invoices/7", headers=bearer(mint(signing_key, "orders"))).status_code == 401
    seen_before = len(upstream_seen)

    response = client.get("/api/invoices/7", headers=bearer(mint(signing_key, "invoices")))

    assert response.status_code == 200, response.text
    assert response.json()["path"] == "/invoices/7"
    assert len(upstream_seen) == seen_before + 1
