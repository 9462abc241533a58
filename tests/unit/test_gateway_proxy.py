"""The gateway against real upstream servers: routing, token checks, headers, bodies, streaming, failures.

Fake auth and orders services run under uvicorn on free 127.0.0.1 ports; so does the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from services.gateway import proxy
from services.gateway.app import create_app
from services.gateway.balancer import Pool
from services.gateway.settings import GatewaySettings
from services.gateway.upstream import Limits, UpstreamPool
from shared.core import BadRequest, SettingsError
from shared.runtime.protocol import uvicorn_options
from shared.web import EdgeSettings
from tests.support.polling import poll
from tests.support.servers import ServerThread

ISSUER = "http://localhost:8000"
KID = "test-key-1"
UPSTREAM_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
LARGE_CHUNK = bytes(range(256)) * 256  # 64 KiB
LARGE_CHUNKS = 128  # 8 MiB in all
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@dataclass
class Seen:
    """What one fake upstream received; entries are appended as requests arrive."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [entry["path"] for entry in self.requests]

    def last(self, path: str) -> dict[str, Any]:
        return [entry for entry in self.requests if entry["path"] == path][-1]


async def record(request: Request, seen: Seen) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "method": request.method,
        "path": request.scope["raw_path"].decode(),
        "query": request.scope["query_string"].decode(),
        "headers": [[name.decode(), value.decode()] for name, value in request.headers.raw],
        "complete": False,
    }
    seen.requests.append(entry)
    digest, length = hashlib.sha256(), 0
    try:
        async for chunk in request.stream():
            digest.update(chunk)
            length += len(chunk)
    except ClientDisconnect:
        return entry
    entry.update(complete=True, body_length=length, body_sha256=digest.hexdigest())
    return entry


def echo_response(entry: dict[str, Any], request: Request) -> Response:
    response = JSONResponse(entry)
    # What the real services do: echo the request id, and name a hop-by-hop header of their own.
    response.headers["x-request-id"] = request.headers.get("x-request-id", "")
    response.headers["connection"] = "x-upstream-hop"
    response.headers["x-upstream-hop"] = "internal"
    return response


def fake_auth(jwks: dict[str, Any], seen: Seen) -> Starlette:
    async def jwks_endpoint(request: Request) -> Response:
        return JSONResponse(jwks)

    async def no_revocation_feed(request: Request) -> Response:
        # As an auth without the feed answers; unrecorded, so the verifier's polls of it never
        # count as requests the gateway proxied.
        return JSONResponse({"error": "not_found"}, status_code=404)

    async def large(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(LARGE_CHUNKS):
                yield LARGE_CHUNK

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def endless(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            deadline = time.monotonic() + 30  # bounded, in case nobody ever hangs up
            while time.monotonic() < deadline:
                yield LARGE_CHUNK
                # Give the loop a turn, or a hung-up peer (whose writes go nowhere) starves it.
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def held(request: Request) -> Response:
        # An answer that comes late on purpose, as a long-poll's does.
        await asyncio.sleep(float(request.query_params["hold"]))
        return JSONResponse({"held": True})

    async def revocation_feed(request: Request) -> Response:
        # No feed for the gateway's own verifier; a held answer when a test asks for one.
        if "hold" in request.query_params:
            return await held(request)
        return await no_revocation_feed(request)

    async def echo(request: Request) -> Response:
        response = echo_response(await record(request, seen), request)
        response.set_cookie("__Host-session", "s3cr3t", secure=True, httponly=True, samesite="strict")
        # Not Secure, so an httpx cookie jar on the gateway would keep it and replay it.
        response.set_cookie("theme", "dark")
        return response

    return Starlette(
        routes=[
            Route("/.well-known/jwks.json", jwks_endpoint),
            Route("/.well-known/revocations.json", revocation_feed),
            Route("/large", large),
            Route("/endless", endless),
            Route("/held", held),
            Route("/{path:path}", echo, methods=ALL_METHODS),
        ]
    )


def fake_orders(seen: Seen) -> Starlette:
    async def slow(request: Request) -> Response:
        entry: dict[str, Any] = {"path": request.scope["raw_path"].decode(), "arrived": time.monotonic()}
        seen.requests.append(entry)
        # Hold the request until the gateway gives up and hangs up (bounded, in case it never does).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                entry["hung_up"] = time.monotonic()
        return JSONResponse({"slow": True})

    async def echo(request: Request) -> Response:
        response = echo_response(await record(request, seen), request)
        response.set_cookie("__Host-session", "forged", secure=True)
        return response

    return Starlette(routes=[Route("/orders/slow", slow), Route("/{path:path}", echo, methods=ALL_METHODS)])


def headers_of(entry: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in entry["headers"] if key == name]


def free_port() -> int:
    """A port nothing listens on (bound once to find it, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gateway_settings(**environ: str) -> GatewaySettings:
    return GatewaySettings.from_env(
        {
            "UPSTREAM_TIMEOUT_SECONDS": str(UPSTREAM_TIMEOUT),
            "REQUEST_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
            **environ,
        }
    )


def settings_before(
    auth_server: ServerThread, orders_server: ServerThread, **environ: str
) -> GatewaySettings:
    """A gateway in front of the fake auth and orders, keys from the fake auth's JWKS."""
    return gateway_settings(
        AUTH_URL=auth_server.url,
        ORDERS_URL=orders_server.url,
        JWKS_URL=f"{auth_server.url}/.well-known/jwks.json",
        **environ,
    )


@pytest.fixture(scope="module")
def signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": KID})


@pytest.fixture(scope="module")
def auth_seen() -> Seen:
    return Seen()


@pytest.fixture(scope="module")
def orders_seen() -> Seen:
    return Seen()


@pytest.fixture(scope="module")
def auth_server(signing_key: RSAKey, auth_seen: Seen) -> Iterator[ServerThread]:
    public = {**signing_key.as_dict(private=False), "kid": KID, "alg": "RS256", "use": "sig"}
    with ServerThread(fake_auth({"keys": [public]}, auth_seen)) as server:
        yield server


@pytest.fixture(scope="module")
def orders_server(orders_seen: Seen) -> Iterator[ServerThread]:
    with ServerThread(fake_orders(orders_seen)) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(auth_server: ServerThread, orders_server: ServerThread) -> Iterator[ServerThread]:
    settings = settings_before(auth_server, orders_server)
    with ServerThread(create_app(settings), lifespan="on") as server:
        yield server


@pytest.fixture
def client(gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client:
        yield client


def mint(key: RSAKey, audience: str = "orders", **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode({"alg": "RS256", "kid": KID, "typ": "at+jwt"}, payload, key)


def bearer(key: RSAKey, audience: str = "orders") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(key, audience)}"}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == code


def test_auth_prefix_is_stripped_and_the_query_kept(client: httpx.Client) -> None:
    response = client.post("/auth/login/step?next=%2Fhome&a=1&a=2", json={"email": "a@example.com"})
    assert response.status_code == 200
    seen = response.json()
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/login/step", "next=%2Fhome&a=1&a=2")


def test_well_known_passes_through_unchanged(client: httpx.Client) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert [key["kid"] for key in response.json()["keys"]] == [KID]


def test_orders_prefix_is_rewritten_with_a_valid_token(client: httpx.Client, signing_key: RSAKey) -> None:
    headers = bearer(signing_key)
    response = client.get("/api/orders/abc?all=true", headers=headers)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert (seen["path"], seen["query"]) == ("/orders/abc", "all=true")
    # Forwarded untouched, so orders verifies the very same token again.
    assert headers_of(seen, "authorization") == [headers["Authorization"]]
    assert client.get("/api/orders", headers=headers).json()["path"] == "/orders"


def test_host_is_the_upstream_and_forwarded_headers_describe_the_client(
    client: httpx.Client, gateway: ServerThread, auth_server: ServerThread
) -> None:
    seen = client.get("/auth/whoami").json()
    assert headers_of(seen, "host") == [f"127.0.0.1:{auth_server.port}"]
    assert headers_of(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert headers_of(seen, "x-forwarded-proto") == ["http"]
    assert headers_of(seen, "x-forwarded-host") == [f"127.0.0.1:{gateway.port}"]


def test_the_gateway_adds_no_headers_the_client_did_not_send(client: httpx.Client) -> None:
    client.headers.clear()  # no User-Agent, Accept or Accept-Encoding from the test client either
    seen = client.get("/auth/bare").json()
    assert {name for name, _ in seen["headers"]} == {
        "host",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    }


def test_spoofed_identity_headers_are_not_forwarded_as_sent(client: httpx.Client) -> None:
    spoofed = {
        "X-User-Id": "admin",
        "X-User-Role": "admin",
        "X-Auth-User": "admin",
        "X-Forwarded-For": "10.6.6.6",
        "X-Forwarded-Host": "evil.example",
        "X-Real-IP": "10.6.6.6",
        "Forwarded": "for=10.6.6.6",
        "X-Client-IP": "10.6.6.6",
    }
    seen = client.get("/auth/me", headers=spoofed).json()
    names = [name for name, _ in seen["headers"]]
    for name in ("x-user-id", "x-user-role", "x-auth-user", "x-real-ip", "forwarded", "x-client-ip"):
        assert name not in names
    assert headers_of(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert "evil.example" not in headers_of(seen, "x-forwarded-host")


def test_hop_by_hop_headers_are_stripped_both_ways(client: httpx.Client) -> None:
    response = client.get(
        "/auth/hops",
        headers={"Connection": "keep-alive, X-Client-Hop", "X-Client-Hop": "1", "Keep-Alive": "timeout=5"},
    )
    names = [name for name, _ in response.json()["headers"]]
    assert "x-client-hop" not in names
    assert "keep-alive" not in names
    assert "x-upstream-hop" not in response.headers
    assert len(response.headers.get_list("date")) == 1


def test_cookies_pass_through_and_every_set_cookie_reaches_the_client(client: httpx.Client) -> None:
    response = client.post("/auth/login", headers={"Cookie": "__Host-session=old; theme=light"})
    assert headers_of(response.json(), "cookie") == ["__Host-session=old; theme=light"]
    set_cookies = response.headers.get_list("set-cookie")
    assert len(set_cookies) == 2
    assert set_cookies[0].startswith("__Host-session=s3cr3t;")
    assert set_cookies[1].startswith("theme=dark;")


def test_the_gateway_never_replays_one_clients_cookies_for_another(gateway: ServerThread) -> None:
    with httpx.Client(base_url=gateway.url, trust_env=False) as first:
        assert first.post("/auth/login").headers.get_list("set-cookie")
    with httpx.Client(base_url=gateway.url, trust_env=False) as second:
        seen = second.get("/auth/me").json()
    assert headers_of(seen, "cookie") == []


def test_a_bearer_api_neither_receives_nor_sets_cookies(client: httpx.Client, signing_key: RSAKey) -> None:
    response = client.get("/api/orders", headers={**bearer(signing_key), "Cookie": "__Host-session=s3cr3t"})
    assert response.status_code == 200
    assert headers_of(response.json(), "cookie") == []
    assert response.headers.get_list("set-cookie") == []


def test_a_request_id_is_generated_forwarded_and_returned_once(client: httpx.Client) -> None:
    response = client.get("/auth/rid")
    returned = response.headers.get_list("x-request-id")
    assert len(returned) == 1
    assert len(returned[0]) >= 16
    assert headers_of(response.json(), "x-request-id") == returned


def test_a_well_formed_request_id_is_adopted_and_forwarded(client: httpx.Client) -> None:
    response = client.get("/auth/rid", headers={"X-Request-ID": "trace-42.a_b"})
    assert response.headers.get_list("x-request-id") == ["trace-42.a_b"]
    assert headers_of(response.json(), "x-request-id") == ["trace-42.a_b"]


def test_orders_without_a_token_is_401_and_never_reaches_orders(
    client: httpx.Client, orders_seen: Seen
) -> None:
    response = client.post("/api/orders/no-token-probe", json={"item": "x", "quantity": 1})
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "/orders/no-token-probe" not in orders_seen.paths()


def test_a_token_for_another_audience_is_401_and_never_reaches_orders(
    client: httpx.Client, signing_key: RSAKey, orders_seen: Seen
) -> None:
    response = client.get("/api/orders/wrong-audience-probe", headers=bearer(signing_key, "billing"))
    assert_error(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert "/orders/wrong-audience-probe" not in orders_seen.paths()


def test_a_token_signed_by_another_key_is_401(client: httpx.Client, orders_seen: Seen) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": KID})
    response = client.get("/api/orders/forged-probe", headers=bearer(stranger))
    assert_error(response, 401, "invalid_token")
    assert "/orders/forged-probe" not in orders_seen.paths()


@pytest.mark.parametrize("path", ["/api/ordersX", "/authz", "/api", "/staticX"])
def test_paths_outside_the_route_table_are_404(client: httpx.Client, path: str) -> None:
    assert_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "path", ["/auth/readyz", "/auth/healthz", "/auth/metrics", "/auth/metrics/raw", "/auth/%72eadyz"]
)
def test_an_upstreams_health_and_metrics_endpoints_are_404_and_never_proxied(
    client: httpx.Client, auth_seen: Seen, path: str
) -> None:
    before = len(auth_seen.requests)
    assert_error(client.get(path), 404, "not_found")
    assert len(auth_seen.requests) == before


@pytest.mark.parametrize(
    "path", ["/auth/%2e%2e/api/orders", "/api/orders%2F..%2Fsecret", "/auth/..%5Cadmin", "/.well-known/%2E"]
)
def test_encoded_traversal_is_400_and_reaches_no_upstream(
    client: httpx.Client, auth_seen: Seen, orders_seen: Seen, path: str
) -> None:
    before = len(auth_seen.requests) + len(orders_seen.requests)
    assert_error(client.get(path), 400, "invalid_path")
    assert len(auth_seen.requests) + len(orders_seen.requests) == before


def read_until_closed(sock: socket.socket) -> tuple[bytes, bytes]:
    """Status line and body of the one response a ``Connection: close`` request gets."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


def raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send bytes httpx would not send as written; the request must say ``Connection: close``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return read_until_closed(sock)


def raw_request(port: int, target: bytes, *headers: bytes) -> tuple[bytes, bytes]:
    """Status line and body for a GET with the given raw header lines."""
    head = b"".join(line + b"\r\n" for line in (b"Host: localhost", *headers, b"Connection: close"))
    return raw_exchange(port, b"GET " + target + b" HTTP/1.1\r\n" + head + b"\r\n")


def start_slow_request(port: int, target: bytes) -> socket.socket:
    """A keep-alive POST that announces 100 bytes of body, sends one, and stays connected."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT + 10)
    sock.sendall(
        b"POST " + target + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    return sock


def test_a_literal_dot_dot_segment_is_400(gateway: ServerThread) -> None:
    # httpx removes dot segments before sending, so speak HTTP/1.1 directly.
    status_line, body = raw_request(gateway.port, b"/auth/../api/orders")
    assert status_line.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["error"] == "invalid_path"


def test_whitespace_around_a_header_value_is_trimmed_not_blamed_on_the_upstream(
    gateway: ServerThread, auth_seen: Seen
) -> None:
    status_line, body = raw_request(gateway.port, b"/auth/padded-header-probe", b"X-Foo: bar \t")
    assert status_line.startswith(b"HTTP/1.1 200 "), body
    assert headers_of(json.loads(body), "x-foo") == ["bar"]


def test_a_valid_token_with_trailing_whitespace_reaches_orders_trimmed(
    gateway: ServerThread, signing_key: RSAKey
) -> None:
    token = mint(signing_key)
    authorization = b"Authorization: Bearer " + token.encode() + b" "
    status_line, body = raw_request(gateway.port, b"/api/orders/padded-token-probe", authorization)
    assert status_line.startswith(b"HTTP/1.1 200 "), body
    assert headers_of(json.loads(body), "authorization") == [f"Bearer {token}"]


async def test_a_request_the_upstream_client_refuses_to_send_is_400_not_502() -> None:
    # h11 refuses a header value with a line break before a byte is written.
    backend = httpcore.AsyncMockBackend([])
    limits = Limits(max_connections=1, pool_timeout=1, connect_timeout=1, timeout=1)
    upstream = UpstreamPool("auth", ["http://127.0.0.1"], limits, network_backend=backend)
    pool = Pool("auth", ["http://127.0.0.1"])
    with pytest.raises(BadRequest) as caught:
        await proxy.send(
            upstream,
            pool,
            "GET",
            b"/x",
            lambda host: [(b"host", host), (b"x-bad", b"a\nb")],
            None,
            retry_after=1,
        )
    assert (caught.value.status, caught.value.code) == (400, "bad_request")
    assert upstream.in_use == 0, "the connection went back"


def test_options_is_not_proxied(client: httpx.Client, auth_seen: Seen) -> None:
    response = client.options("/auth/token-preflight-probe")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD, POST, PUT, PATCH, DELETE"
    assert "/token-preflight-probe" not in auth_seen.paths()


def test_health_routes_are_the_gateways_own(client: httpx.Client, auth_seen: Seen) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    jwks = ready.json()["checks"]["jwks"]
    assert jwks["ready"] is True
    assert jwks["audiences"]["orders"]["keys"] == 1
    assert "/healthz" not in auth_seen.paths()


@pytest.mark.parametrize("chunked", [False, True])
def test_the_request_body_reaches_the_upstream_intact(client: httpx.Client, chunked: bool) -> None:
    body = os.urandom(900 * 1024)
    content = iter([body[i : i + 50_000] for i in range(0, len(body), 50_000)]) if chunked else body
    response = client.post("/auth/upload", content=content)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["complete"] is True
    assert (seen["body_length"], seen["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


def test_a_large_response_streams_through_intact(client: httpx.Client) -> None:
    expected = hashlib.sha256(LARGE_CHUNK * LARGE_CHUNKS).hexdigest()
    digest, length = hashlib.sha256(), 0
    with client.stream("GET", "/auth/large") as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            digest.update(chunk)
            length += len(chunk)
    assert (length, digest.hexdigest()) == (len(LARGE_CHUNK) * LARGE_CHUNKS, expected)


def test_a_declared_body_over_the_limit_is_413(client: httpx.Client, auth_seen: Seen) -> None:
    response = client.post("/auth/too-big-declared", content=b"x" * (1024 * 1024 + 1))
    assert_error(response, 413, "payload_too_large")
    assert "/too-big-declared" not in auth_seen.paths()


def test_a_streamed_body_over_the_limit_is_413_and_never_arrives_whole(
    client: httpx.Client, auth_seen: Seen
) -> None:
    chunks = iter([b"x" * 65536] * 17)  # 1 MiB + 64 KiB, without a Content-Length
    response = client.post("/auth/too-big-streamed", content=chunks)
    assert_error(response, 413, "payload_too_large")
    arrived = [entry for entry in auth_seen.requests if entry["path"] == "/too-big-streamed"]
    assert not any(entry["complete"] for entry in arrived)


def test_a_slow_request_body_is_408_and_never_reaches_the_upstream(
    client: httpx.Client, gateway: ServerThread, auth_seen: Seen
) -> None:
    started = time.monotonic()
    with start_slow_request(gateway.port, b"/auth/slow-body-probe") as slow:
        # Meanwhile the gateway serves everyone else.
        assert client.get("/auth/while-a-body-trickles").status_code == 200
        # Read to the end: the gateway hangs up after a 408 rather than wait on for the rest.
        status_line, body = read_until_closed(slow)
    elapsed = time.monotonic() - started
    assert status_line.startswith(b"HTTP/1.1 408 "), body
    assert json.loads(body)["error"] == "request_timeout"
    assert BODY_TIMEOUT - 0.05 <= elapsed < BODY_TIMEOUT + 5
    assert "/slow-body-probe" not in auth_seen.paths()


def test_slow_request_bodies_cannot_take_the_upstream_pool(
    auth_server: ServerThread, orders_server: ServerThread
) -> None:
    settings = settings_before(
        auth_server,
        orders_server,
        UPSTREAM_MAX_CONNECTIONS="2",
    )
    with ServerThread(create_app(settings), lifespan="on") as gateway, contextlib.ExitStack() as stack:
        trickling = [stack.enter_context(start_slow_request(gateway.port, b"/auth/login")) for _ in range(3)]
        # More slow clients than pooled connections: if they held the pool, these would wait for it
        # and fail 504 long before the slow clients give up.
        with httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client:
            deadline = time.monotonic() + BODY_TIMEOUT
            while time.monotonic() < deadline:
                assert client.get("/auth/while-bodies-trickle").status_code == 200
        for sock in trickling:
            status_line, body = read_until_closed(sock)
            assert status_line.startswith(b"HTTP/1.1 408 "), body


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record the servers log, uvicorn's own included."""
    caplog.set_level(logging.INFO)
    # uvicorn's default logging config stops its records at the "uvicorn" logger.
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn_logger.removeHandler(caplog.handler)


def test_a_client_that_hangs_up_mid_body_is_neither_forwarded_nor_logged_as_an_error(
    client: httpx.Client, gateway: ServerThread, auth_seen: Seen, logs: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /auth/hang-up-probe HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n" + b"x" * 50
        )
    # The access line is written last, whatever became of the request.
    poll(
        lambda: any("/auth/hang-up-probe" in record.getMessage() for record in logs.records),
        within=10,
        what="the gateway finishing the abandoned request",
        every=0.01,
    )
    assert [record.getMessage() for record in logs.records if record.levelno >= logging.ERROR] == []
    assert [record.getMessage() for record in logs.records if record.exc_info] == []
    assert "/hang-up-probe" not in auth_seen.paths()
    assert client.get("/auth/after-hang-up").status_code == 200


def test_a_slow_upstream_is_504(client: httpx.Client, signing_key: RSAKey, orders_seen: Seen) -> None:
    started = time.monotonic()
    response = client.get("/api/orders/slow", headers=bearer(signing_key))
    assert_error(response, 504, "gateway_timeout")
    assert "/orders/slow" in orders_seen.paths()
    assert time.monotonic() - started < UPSTREAM_TIMEOUT + 5


@pytest.fixture(scope="module")
def broken_gateway(orders_server: ServerThread) -> Iterator[ServerThread]:
    """A gateway whose auth upstream and JWKS endpoint are down."""
    dead = f"http://127.0.0.1:{free_port()}"
    settings = gateway_settings(
        AUTH_URL=dead, ORDERS_URL=orders_server.url, JWKS_URL=f"{dead}/.well-known/jwks.json"
    )
    with ServerThread(create_app(settings), lifespan="on") as server:
        yield server


def test_an_upstream_that_is_down_is_502(broken_gateway: ServerThread) -> None:
    with httpx.Client(base_url=broken_gateway.url, trust_env=False, timeout=10) as client:
        assert_error(client.post("/auth/login", json={}), 502, "bad_gateway")


def test_without_signing_keys_orders_is_503_and_not_ready(
    broken_gateway: ServerThread, signing_key: RSAKey, orders_seen: Seen
) -> None:
    with httpx.Client(base_url=broken_gateway.url, trust_env=False, timeout=10) as client:
        response = client.get("/api/orders/no-keys-probe", headers=bearer(signing_key))
        assert_error(response, 503, "service_unavailable")
        assert_error(client.get("/readyz"), 503, "not_ready")
    assert "/orders/no-keys-probe" not in orders_seen.paths()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8001/prefix", "ftp://127.0.0.1", "127.0.0.1:8001"])
def test_an_upstream_url_that_is_not_an_origin_is_refused_by_name(url: str) -> None:
    with pytest.raises(SettingsError, match="AUTH_URL"):
        GatewaySettings.from_env({"AUTH_URL": url})


# The gateway notices a client leaving through uvicorn's receive under a plain server, and through
# the connection's future (shared.web.disconnect) under the project's own protocol: both are tested.
SERVERS = {"plain": {}, "project": uvicorn_options(EdgeSettings())}


@pytest.fixture(params=sorted(SERVERS))
def server_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    return SERVERS[request.param]


def test_a_client_that_abandons_a_stream_gives_its_upstream_connection_back(
    auth_server: ServerThread, orders_server: ServerThread, server_options: dict[str, Any]
) -> None:
    settings = settings_before(
        auth_server,
        orders_server,
        UPSTREAM_MAX_CONNECTIONS="1",
    )
    with ServerThread(create_app(settings), lifespan="on", **server_options) as gateway:
        with (
            httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as abandoning,
            abandoning.stream("GET", "/auth/endless") as response,
        ):
            assert next(response.iter_raw())
        # With one pooled connection, a leaked one would make this wait for the pool and fail 504.
        with httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client:
            assert client.get("/auth/after-abandon").status_code == 200


def test_behind_a_trusted_ingress_the_upstream_learns_the_client_the_ingress_saw(
    auth_server: ServerThread, orders_server: ServerThread
) -> None:
    # An ingress controller on loopback: its X-Forwarded-For names the real client, and the
    # gateway states that client to auth (whose login budgets count by it) in a header of its own.
    settings = settings_before(
        auth_server,
        orders_server,
        TRUSTED_PROXIES="127.0.0.1",
    )
    with (
        ServerThread(create_app(settings), lifespan="on") as ingress_facing,
        httpx.Client(base_url=ingress_facing.url, trust_env=False, timeout=10) as ingress,
    ):
        seen = ingress.get("/auth/whoami", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}).json()
        assert headers_of(seen, "x-forwarded-for") == ["203.0.113.9"], "the hop the ingress vouches for"
        seen = ingress.get("/auth/whoami").json()
        assert headers_of(seen, "x-forwarded-for") == ["127.0.0.1"], "no header: the peer itself"


def test_an_untrusted_ingress_cannot_choose_the_client_address(client: httpx.Client) -> None:
    seen = client.get("/auth/whoami", headers={"X-Forwarded-For": "203.0.113.9"}).json()
    assert headers_of(seen, "x-forwarded-for") == ["127.0.0.1"]


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES: 'ingress' is not an IP address or network"):
        gateway_settings(TRUSTED_PROXIES="10.0.0.0/8, ingress")


def metric(client: httpx.Client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {line_start}")


def send_and_never_read(port: int, target: bytes, *headers: bytes) -> socket.socket:
    """A client that sends one GET and then reads nothing, with a receive buffer as small as allowed."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    head = b"".join(line + b"\r\n" for line in (b"Host: localhost", *headers))
    sock.sendall(b"GET " + target + b" HTTP/1.1\r\n" + head + b"\r\n")
    return sock


def test_a_full_orders_pool_answers_503_upstream_busy_fast_and_leaves_auth_alone(
    auth_server: ServerThread, orders_server: ServerThread, signing_key: RSAKey, orders_seen: Seen
) -> None:
    settings = settings_before(
        auth_server,
        orders_server,
        UPSTREAM_ORDERS_MAX_CONNECTIONS="1",
        UPSTREAM_TIMEOUT_SECONDS="10",
        UPSTREAM_POOL_TIMEOUT_SECONDS="0.2",
    )
    token = mint(signing_key).encode()
    with (
        ServerThread(create_app(settings), lifespan="on") as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client,
        send_and_never_read(gateway.port, b"/api/orders/slow", b"Authorization: Bearer " + token),
    ):
        poll(
            lambda: metric(client, 'gateway_upstream_connections{state="in_use",upstream="orders"}') == 1,
            within=5,
            what="the slow request holds the only orders connection",
        )
        started = time.monotonic()
        busy = client.get("/api/orders/while-the-pool-is-full", headers=bearer(signing_key))
        assert_error(busy, 503, "upstream_busy")
        assert busy.headers["retry-after"] == "1"
        assert time.monotonic() - started < 3, "refused after the pool timeout, not the upstream timeout"
        assert metric(client, 'gateway_upstream_pool_exhausted_total{upstream="orders"}') == 1
        # The auth pool is its own: logins and the JWKS never wait behind orders.
        assert client.post("/auth/login-while-orders-is-full").status_code == 200
        assert client.get("/.well-known/jwks.json").status_code == 200


def test_each_upstream_pool_has_its_own_size(auth_server: ServerThread, orders_server: ServerThread) -> None:
    settings = settings_before(
        auth_server, orders_server, UPSTREAM_MAX_CONNECTIONS="7", UPSTREAM_AUTH_MAX_CONNECTIONS="3"
    )
    assert (settings.max_connections_for("auth"), settings.max_connections_for("orders")) == (3, 7)
    with (
        ServerThread(create_app(settings), lifespan="on") as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client,
    ):
        assert metric(client, 'gateway_upstream_connections_limit{upstream="auth"}') == 3
        assert metric(client, 'gateway_upstream_connections_limit{upstream="orders"}') == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UPSTREAM_ORDERS_MAX_CONNECTIONS", "0"),
        ("UPSTREAM_POOL_TIMEOUT_SECONDS", "soon"),
        ("CLIENT_SEND_TIMEOUT_SECONDS", "0"),
        ("UPSTREAM_RESPONSE_BUFFER_BYTES", "-1"),
    ],
)
def test_a_malformed_pool_or_send_setting_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        GatewaySettings.from_env({name: value})


def test_a_client_that_never_reads_a_streamed_answer_loses_it_and_frees_the_connection(
    auth_server: ServerThread, orders_server: ServerThread, server_options: dict[str, Any]
) -> None:
    send_timeout = 0.5
    settings = settings_before(
        auth_server,
        orders_server,
        UPSTREAM_AUTH_MAX_CONNECTIONS="1",
        CLIENT_SEND_TIMEOUT_SECONDS=str(send_timeout),
        UPSTREAM_POOL_TIMEOUT_SECONDS="0.2",
    )
    with (
        ServerThread(create_app(settings), lifespan="on", **server_options) as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client,
        send_and_never_read(gateway.port, b"/auth/large") as stalled,
    ):
        started = time.monotonic()
        # 8 MiB is far more than the socket buffers hold, so the gateway's writes stall.
        poll(
            lambda: metric(client, 'gateway_client_send_timeouts_total{upstream="auth"}') == 1,
            within=send_timeout + 5,
            what="the stalled answer abandoned",
        )
        assert time.monotonic() - started >= send_timeout - 0.05
        assert metric(client, 'gateway_upstream_connections{state="in_use",upstream="auth"}') == 0
        # With one pooled connection, a held one would make this a 503 upstream_busy.
        assert client.get("/auth/after-a-stalled-reader").status_code == 200
        # The stalled client's connection was closed: it can read what was sent, then EOF.
        stalled.settimeout(10)
        while stalled.recv(65536):
            pass


def test_a_client_that_hangs_up_while_waiting_cancels_the_upstream_request(
    auth_server: ServerThread,
    orders_server: ServerThread,
    signing_key: RSAKey,
    orders_seen: Seen,
    server_options: dict[str, Any],
) -> None:
    upstream_timeout = 10.0
    settings = settings_before(auth_server, orders_server, UPSTREAM_TIMEOUT_SECONDS=str(upstream_timeout))
    token = mint(signing_key).encode()
    target = b"/api/orders/slow?hang-up-probe"
    with (
        ServerThread(create_app(settings), lifespan="on", **server_options) as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client,
    ):
        with send_and_never_read(gateway.port, target, b"Authorization: Bearer " + token):
            poll(
                lambda: metric(client, 'gateway_upstream_connections{state="in_use",upstream="orders"}') == 1,
                within=5,
                what="the request reached orders",
            )
        hung_up = time.monotonic()
        # Orders sees its request hang up as soon as the client did, not when the gateway times out.
        entry = [e for e in orders_seen.requests if e["path"] == "/orders/slow"][-1]
        poll(lambda: "hung_up" in entry, within=upstream_timeout / 2, what="orders saw the hang-up")
        assert entry["hung_up"] - hung_up < upstream_timeout / 2
        poll(
            lambda: metric(client, 'gateway_upstream_abandoned_total{upstream="orders"}') == 1,
            within=5,
            what="the exchange counted as abandoned",
        )
        assert metric(client, 'gateway_upstream_connections{state="in_use",upstream="orders"}') == 0


def test_the_revocation_feeds_long_poll_may_outlast_the_upstream_timeout(client: httpx.Client) -> None:
    response = client.get("/.well-known/revocations.json?hold=2", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"held": True}


def test_any_other_route_is_still_cut_at_the_upstream_timeout(client: httpx.Client) -> None:
    assert_error(client.get("/auth/held?hold=2", timeout=10), 504, "gateway_timeout")
