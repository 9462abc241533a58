"""The shared service defaults: no slash redirects, clean JSON errors, proxies ignored for keys."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from shared.web import VerifierSettings, build_app, open_verifier


@contextlib.asynccontextmanager
async def _nothing(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {}


async def _ready(request: Request) -> dict[str, Any]:
    return {"ok": True}


async def _hello(request: Request) -> Response:
    return JSONResponse({"hello": "world"})


def test_a_trailing_slash_is_a_404_not_a_redirect_to_an_internal_address() -> None:
    app = build_app([Route("/hello", _hello)], lifespan=_nothing, readiness=_ready)
    with TestClient(app) as client:
        response = client.get("/hello/", follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["error"] == "not_found"


@pytest.fixture
def jwks_server() -> Iterator[str]:
    key = RSAKey.generate_key(2048)
    body = json.dumps({"keys": [{**key.as_dict(private=False), "kid": "k1", "alg": "RS256", "use": "sig"}]})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


async def test_jwks_fetch_ignores_proxy_variables(jwks_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy that does not exist: a client that honoured it could not load any key.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings = VerifierSettings.from_env({"JWKS_URL": jwks_server})
    async with open_verifier(settings, "orders") as verifier:
        assert verifier.ready
