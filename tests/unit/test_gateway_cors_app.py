"""CORS on a real gateway: preflights and answers for the API routes, nothing anywhere else, nothing when off.

Two gateways, one with ``CORS_ALLOWED_ORIGINS`` and one without, run under uvicorn in front of a
fake JWKS and one recording upstream standing in for auth, orders and a configured invoices
service; every request is real HTTP, and what the CORS gateway answers off the API routes is
compared with what the plain one answers.
"""

from __future__ import annotations

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
from services.gateway.cors import CorsMiddleware
from services.gateway.settings import GatewaySettings
from tests.support.claims import claims
from tests.support.http import assert_json_error, bearer
from tests.support.servers import ServerThread
from tests.support.servers import jwks_server as serve_jwks

KID = "cors-key-1"
APP = "https://app.example.com"
EVIL = "https://evil.example"
CORS_ENV = {
    "CORS_ALLOWED_ORIGINS": f"{APP},http://localhost:5173",
    "CORS_MAX_AGE_SECONDS": "120",
    "GATEWAY_ROUTES": "/api/invoices=invoices/invoices@invoices",
}
# Every path the gateway serves that is not a bearer API route, and must stay as it was.
NOT_API_PATHS = [
    "/auth/token",
    "/auth/me",
    "/auth/login",
    "/.well-known/jwks.json",
    "/.well-known/revocations.json",
    "/",
    "/static/app.js",
    "/openapi.json",
    "/healthz",
    "/forward-auth/orders",
    "/api/ordersX",
]


def preflight(origin: str, method: str = "GET", headers: str | None = None) -> dict[str, str]:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    return asked if headers is None else {**asked, "Access-Control-Request-Headers": headers}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("access-control-")}


def mint(key: RSAKey, audience: str = "orders") -> str:
    now = int(time.time())
    payload = claims(aud=audience, iat=now, nbf=now, exp=now + 300, jti=uuid.uuid4().hex)
    return jwt.encode({"alg": "RS256", "kid": KID, "typ": "at+jwt"}, payload, key)


@pytest.fixture(scope="module")
def signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": KID})


@pytest.fixture(scope="module")
def upstream_seen() -> list[str]:
    return []


@pytest.fixture(scope="module")
def jwks_server(signing_key: RSAKey) -> Iterator[ServerThread]:
    with serve_jwks(signing_key) as server:
        yield server


@pytest.fixture(scope="module")
def upstream(upstream_seen: list[str]) -> Iterator[ServerThread]:
    """Records each request as ``METHOD /path``; ``/orders/own-cors`` answers with CORS headers of its own."""

    async def record(request: Request) -> Response:
        upstream_seen.append(f"{request.method} {request.url.path}")
        headers = {}
        if request.url.path == "/orders/own-cors":
            headers = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"}
        return JSONResponse({"path": request.url.path}, headers=headers)

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    with ServerThread(Starlette(routes=[Route("/{path:path}", record, methods=methods)])) as server:
        yield server


def _settings(jwks_server: ServerThread, upstream: ServerThread, environ: dict[str, str]) -> GatewaySettings:
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
def client(jwks_server: ServerThread, upstream: ServerThread) -> Iterator[httpx.Client]:
    """A client of the gateway with CORS on."""
    app = create_app(_settings(jwks_server, upstream, CORS_ENV))
    with (
        ServerThread(app, lifespan="on") as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as http,
    ):
        yield http


@pytest.fixture(scope="module")
def plain(jwks_server: ServerThread, upstream: ServerThread) -> Iterator[httpx.Client]:
    """A client of the same gateway with CORS off, as every gateway was before it."""
    app = create_app(_settings(jwks_server, upstream, {"GATEWAY_ROUTES": CORS_ENV["GATEWAY_ROUTES"]}))
    with (
        ServerThread(app, lifespan="on") as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as http,
    ):
        yield http


@pytest.mark.parametrize("path", ["/api/orders", "/api/orders/7", "/api/invoices/7"])
def test_a_preflight_from_an_allowed_origin_is_approved_for_the_token_and_json_only(
    client: httpx.Client, upstream_seen: list[str], path: str
) -> None:
    seen = len(upstream_seen)

    response = client.options(path, headers=preflight(APP, "POST", "authorization,content-type"))

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, HEAD, POST, PUT, PATCH, DELETE",
        "access-control-allow-headers": "Authorization, Content-Type",
        "access-control-max-age": "120",
    }
    assert response.headers["vary"] == "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    assert response.headers["x-request-id"]
    # Answered by the gateway: a preflight carries no token, so it never goes upstream.
    assert len(upstream_seen) == seen


def test_a_preflight_is_counted_under_its_routes_prefix(client: httpx.Client) -> None:
    client.options("/api/orders/7", headers=preflight(APP))

    metrics = client.get("/metrics").text
    assert 'http_requests_total{method="OPTIONS",route="/api/orders",status="204"}' in metrics


def test_a_preflight_asking_for_the_csrf_header_or_a_cookie_gets_no_approval_for_them(
    client: httpx.Client,
) -> None:
    response = client.options("/api/orders", headers=preflight(APP, "DELETE", "x-csrf-token, cookie"))

    allowed = response.headers["access-control-allow-headers"].lower().split(", ")
    assert allowed == ["authorization", "content-type"]


@pytest.mark.parametrize(
    "origin", [EVIL, "http://localhost:5174", "https://app.example.com.evil.example", "null"]
)
def test_a_preflight_from_any_other_origin_is_refused_with_a_json_403(
    client: httpx.Client, upstream_seen: list[str], origin: str
) -> None:
    seen = len(upstream_seen)

    response = client.options("/api/orders", headers=preflight(origin, "GET", "authorization"))

    assert_json_error(response, 403, "cors_origin_not_allowed")
    assert cors_headers(response) == {}
    assert response.headers["vary"].startswith("Origin")
    assert len(upstream_seen) == seen


@pytest.mark.parametrize("path", NOT_API_PATHS)
@pytest.mark.parametrize("method", ["OPTIONS", "GET", "POST"])
def test_off_the_api_routes_an_allowed_origin_gets_exactly_what_it_got_without_cors(
    client: httpx.Client, plain: httpx.Client, path: str, method: str
) -> None:
    headers = preflight(APP, "POST", "x-csrf-token") if method == "OPTIONS" else {"Origin": APP}

    response = client.request(method, path, headers=headers)
    before = plain.request(method, path, headers=headers)

    assert cors_headers(response) == {}
    assert "origin" not in response.headers.get("vary", "").lower()
    assert response.status_code == before.status_code
    if method == "OPTIONS":
        assert response.status_code == 405
        assert response.json() == before.json()


def test_a_plain_options_to_the_api_keeps_its_405(client: httpx.Client, plain: httpx.Client) -> None:
    response = client.options("/api/orders", headers={"Origin": APP})
    before = plain.options("/api/orders", headers={"Origin": APP})

    assert response.status_code == before.status_code == 405
    assert response.json() == before.json()
    assert response.headers["allow"] == before.headers["allow"]


def test_an_allowed_origin_can_read_an_api_answer(client: httpx.Client, signing_key: RSAKey) -> None:
    response = client.get("/api/orders", headers={"Origin": APP, **bearer(mint(signing_key))})

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == APP
    assert "WWW-Authenticate" in response.headers["access-control-expose-headers"]
    assert response.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in response.headers


def test_an_allowed_origin_can_read_why_its_token_was_refused(client: httpx.Client) -> None:
    response = client.get("/api/invoices/7", headers={"Origin": APP, "Authorization": "Bearer nonsense"})

    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_an_answer_to_any_other_origin_is_proxied_but_not_approved(
    client: httpx.Client, signing_key: RSAKey
) -> None:
    response = client.get("/api/orders", headers={"Origin": EVIL, **bearer(mint(signing_key))})

    assert response.status_code == 200
    assert cors_headers(response) == {}
    assert response.headers["vary"] == "Origin"


def test_an_api_answer_without_an_origin_still_varies_on_it(
    client: httpx.Client, signing_key: RSAKey
) -> None:
    response = client.get("/api/orders", headers=bearer(mint(signing_key)))

    assert response.status_code == 200
    assert cors_headers(response) == {}
    assert response.headers["vary"] == "Origin"


def test_an_upstreams_own_cors_headers_never_reach_the_client(
    client: httpx.Client, signing_key: RSAKey
) -> None:
    token = bearer(mint(signing_key))

    approved = client.get("/api/orders/own-cors", headers={"Origin": APP, **token})
    refused = client.get("/api/orders/own-cors", headers={"Origin": EVIL, **token})

    assert approved.headers.get_list("access-control-allow-origin") == [APP]
    assert "access-control-allow-credentials" not in approved.headers
    assert cors_headers(refused) == {}


def test_two_origins_are_refused_before_cors_is_considered(client: httpx.Client) -> None:
    headers = [("Origin", APP), ("Origin", EVIL), ("Access-Control-Request-Method", "GET")]

    response = client.options("/api/orders", headers=headers)

    assert_json_error(response, 400, "duplicate_origin")
    assert cors_headers(response) == {}


def test_without_cors_a_preflight_to_the_api_gets_405_and_no_approval(plain: httpx.Client) -> None:
    response = plain.options("/api/orders", headers=preflight(APP, "GET", "authorization"))

    assert_json_error(response, 405)
    assert cors_headers(response) == {}
    assert "vary" not in response.headers


def test_without_cors_no_middleware_is_mounted(jwks_server: ServerThread, upstream: ServerThread) -> None:
    off = create_app(_settings(jwks_server, upstream, {}))
    on = create_app(_settings(jwks_server, upstream, CORS_ENV))

    def mounted(app: Starlette) -> list[object]:
        return [item.cls for item in app.user_middleware]

    assert CorsMiddleware in mounted(on)
    assert CorsMiddleware not in mounted(off)


def _paths(document: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = document.get("paths", {})
    return paths


def test_the_openapi_document_lists_no_options(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()

    assert all("options" not in operations for operations in _paths(document).values())
