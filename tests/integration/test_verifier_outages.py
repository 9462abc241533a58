"""A JWKS answering 500 or garbage: orders keeps the last good keys and says so in /readyz and /metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from services.orders.app import create_app
from services.orders.settings import OrdersSettings
from tests.support.polling import poll
from tests.support.servers import ServerThread

ISSUER = "http://localhost:8000"
KID = "outage-test-key"


class FlakyJWKS:
    """A real JWKS endpoint on loopback whose answer a test switches: good, 500 or garbage."""

    def __init__(self, key: RSAKey):
        self.public = {**key.as_dict(private=False), "kid": KID, "alg": "RS256", "use": "sig"}
        self.mode = "good"

    async def handle(self, request: Request) -> Response:
        # A one-second max-age: the verifier refetches about every second.
        headers = {"Cache-Control": "public, max-age=1"}
        if self.mode == "http-500":
            return Response("internal error", status_code=500, headers=headers)
        if self.mode == "garbage":
            return Response(b"<html>maintenance</html>", media_type="text/html", headers=headers)
        return JSONResponse({"keys": [self.public]}, headers=headers)


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture
def jwks(key: RSAKey) -> Iterator[tuple[FlakyJWKS, str]]:
    endpoint = FlakyJWKS(key)
    with ServerThread(Starlette(routes=[Route("/.well-known/jwks.json", endpoint.handle)])) as server:
        yield endpoint, f"{server.url}/.well-known/jwks.json"


def token(key: RSAKey) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "orders",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "role": "user",
    }
    return jwt.encode({"alg": "RS256", "kid": KID, "typ": "at+jwt"}, claims, key, algorithms=["RS256"])


def jwks_status(client: TestClient) -> dict[str, Any]:
    status: dict[str, Any] = client.get("/readyz").json()["checks"]["jwks"]
    return status


@pytest.mark.parametrize(("mode", "error"), [("http-500", "HTTP 500"), ("garbage", "not valid JSON")])
def test_a_failing_jwks_keeps_the_last_good_keys_and_shows_it(
    jwks: tuple[FlakyJWKS, str], key: RSAKey, tmp_path: Path, mode: str, error: str
) -> None:
    endpoint, url = jwks
    settings = OrdersSettings.from_env(
        {"ORDERS_DB_PATH": str(tmp_path / "orders.sqlite3"), "JWKS_URL": url, "TOKEN_ISSUER": ISSUER}
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/orders", headers={"Authorization": f"Bearer {token(key)}"}).status_code == 200
        before = jwks_status(client)["failures"]
        endpoint.mode = mode
        poll(lambda: jwks_status(client)["failures"] >= before + 2, within=15, what="two failed refreshes")

        assert client.get("/orders", headers={"Authorization": f"Bearer {token(key)}"}).status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200
        status = ready.json()["checks"]["jwks"]
        assert status["last_fetch_ok"] is False
        assert error in status["last_error"]
        metrics = client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'jwks_last_fetch_success{audience="orders"} 0.0' in metrics.text
        assert 'jwks_fetches_total{audience="orders",result="failure"}' in metrics.text
        assert 'tokens_verified_total{audience="orders"} 2.0' in metrics.text

        endpoint.mode = "good"
        poll(lambda: jwks_status(client)["last_fetch_ok"], within=15, what="recovery")
        assert jwks_status(client)["last_error"] is None
