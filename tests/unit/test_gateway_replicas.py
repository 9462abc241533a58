"""The gateway in front of several replicas of one upstream, all real servers on loopback.

Each fake replica names itself in its answers and fails its ``/readyz`` on demand; one more
"replica" reads each request and hangs up without answering, as a process dying mid-request does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from tests.support.polling import poll
from tests.support.servers import ServerThread

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


class Replica:
    """A fake auth replica: counts what it served and answers ``/readyz`` as told."""

    def __init__(self, name: str, jwks: dict[str, Any]):
        self.name = name
        self.ready = True
        self.served: list[tuple[str, str]] = []

        async def readyz(request: Request) -> Response:
            return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

        async def jwks_endpoint(request: Request) -> Response:
            return JSONResponse(jwks)

        async def no_revocation_feed(request: Request) -> Response:
            # As an auth without the feed answers; unrecorded, so the gateway's verifier polling
            # it never counts as a request the gateway proxied.
            return JSONResponse({"error": "not_found"}, status_code=404)

        async def echo(request: Request) -> Response:
            self.served.append((request.method, request.url.path))
            return JSONResponse({"replica": self.name})

        self.app = Starlette(
            routes=[
                Route("/readyz", readyz),
                Route("/.well-known/jwks.json", jwks_endpoint),
                Route("/.well-known/revocations.json", no_revocation_feed),
                Route("/{path:path}", echo, methods=ALL_METHODS),
            ]
        )


class HangUp:
    """A TCP server that passes its health check but reads every other request and closes unanswered."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head and (chunk := conn.recv(65536)):
                    head += chunk
                if head.startswith(b"GET /readyz "):
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                elif head:
                    self.requests.append(head.split(b"\r\n", 1)[0])

    def __enter__(self) -> HangUp:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Closing alone leaves the thread blocked in accept(); shutting the socket down wakes it.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def jwks() -> dict[str, Any]:
    key = RSAKey.generate_key(2048, parameters={"kid": "replica-key"})
    return {"keys": [{**key.as_dict(private=False), "kid": "replica-key", "alg": "RS256", "use": "sig"}]}


@pytest.fixture
def replicas(jwks: dict[str, Any]) -> Iterator[dict[str, tuple[Replica, ServerThread]]]:
    one, two = Replica("one", jwks), Replica("two", jwks)
    with ServerThread(one.app) as first, ServerThread(two.app) as second:
        yield {"one": (one, first), "two": (two, second)}


@contextmanager
def gateway(auth_urls: list[str], jwks_url: str, interval: float) -> Iterator[httpx.Client]:
    settings = GatewaySettings.from_env(
        {
            "AUTH_URL": ",".join(auth_urls),
            "ORDERS_URL": f"http://127.0.0.1:{free_port()}",
            "JWKS_URL": jwks_url,
            "UPSTREAM_HEALTH_INTERVAL_SECONDS": str(interval),
            "UPSTREAM_TIMEOUT_SECONDS": "5",
        }
    )
    with (
        ServerThread(create_app(settings), lifespan="on") as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client,
    ):
        yield client


def health(client: httpx.Client) -> dict[str, bool]:
    members = client.get("/readyz").json()["checks"]["upstreams"]["auth"]["members"]
    return {member["url"]: member["healthy"] for member in members}


def metric(client: httpx.Client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line starting with {line_start}")


def test_requests_take_turns_across_the_replicas(replicas: dict[str, tuple[Replica, ServerThread]]) -> None:
    (one, first), (two, second) = replicas["one"], replicas["two"]
    with gateway([first.url, second.url], f"{first.url}/.well-known/jwks.json", 60) as client:
        answers = [client.post("/auth/token").json()["replica"] for _ in range(10)]

    assert sorted(answers) == ["one"] * 5 + ["two"] * 5
    assert len(one.served) == len(two.served) == 5


def test_a_replica_that_refuses_connections_is_marked_down_and_no_request_fails(
    replicas: dict[str, tuple[Replica, ServerThread]],
) -> None:
    (one, first), (_, second) = replicas["one"], replicas["two"]
    dead = second.url
    # A health interval far beyond the test: only the failed connection can mark it down.
    with gateway([first.url, dead], f"{first.url}/.well-known/jwks.json", 600) as client:
        second.__exit__()
        # POSTs: a connection that never opened carried nothing, so even these go elsewhere.
        statuses = [client.post("/auth/login").status_code for _ in range(6)]
        marked = health(client)
        down = metric(client, f'gateway_upstream_healthy{{upstream="auth",url="{dead}"}}')
        retried = metric(client, 'gateway_upstream_retries_total{cause="connect",upstream="auth"}')
        by_connect = metric(
            client,
            f'gateway_upstream_marked_down_total{{cause="connect",upstream="auth",url="{dead}"}}',
        )

    assert statuses == [200] * 6
    assert len(one.served) == 6
    assert marked == {first.url: True, dead: False}
    assert (down, retried, by_connect) == (0.0, 1.0, 1.0)


def test_a_replica_failing_its_health_check_leaves_rotation_and_returns_when_it_passes(
    replicas: dict[str, tuple[Replica, ServerThread]],
) -> None:
    first, (two, second) = replicas["one"][1], replicas["two"]
    with gateway([first.url, second.url], f"{first.url}/.well-known/jwks.json", 0.1) as client:
        two.ready = False
        poll(lambda: health(client)[second.url] is False, within=5, what="replica two marked down")
        served_before = len(two.served)
        during = [client.get("/auth/me").json()["replica"] for _ in range(4)]
        reason = client.get("/readyz").json()["checks"]["upstreams"]["auth"]["members"][1]["reason"]
        two.ready = True
        poll(lambda: health(client)[second.url] is True, within=5, what="replica two back")
        after = [client.get("/auth/me").json()["replica"] for _ in range(4)]

    assert during == ["one"] * 4
    assert len(two.served) == served_before + 2
    assert reason == "health check answered HTTP 503"
    assert sorted(after) == ["one", "one", "two", "two"]


def test_every_replica_down_is_503_in_the_error_shape_and_the_gateway_stays_ready(
    replicas: dict[str, tuple[Replica, ServerThread]],
) -> None:
    (one, first), (two, second) = replicas["one"], replicas["two"]
    with gateway([first.url, second.url], f"{first.url}/.well-known/jwks.json", 0.1) as client:
        one.ready = two.ready = False
        poll(lambda: not any(health(client).values()), within=5, what="both replicas marked down")
        served = len(one.served) + len(two.served)
        refused = client.post("/auth/login")
        ready = client.get("/readyz")

    assert refused.status_code == 503
    assert refused.json() == {
        "error": "service_unavailable",
        "detail": "no auth service instance is available",
    }
    assert refused.headers["retry-after"] == "1"
    assert len(one.served) + len(two.served) == served
    assert ready.status_code == 200
    assert ready.json()["checks"]["upstreams"]["auth"]["available"] is False


def test_a_single_origin_is_tried_even_when_marked_down(
    replicas: dict[str, tuple[Replica, ServerThread]],
) -> None:
    one, first = replicas["one"]
    with gateway([first.url], f"{first.url}/.well-known/jwks.json", 0.1) as client:
        one.ready = False
        poll(lambda: health(client)[first.url] is False, within=5, what="the only origin marked down")
        response = client.post("/auth/login")

    assert response.json() == {"replica": "one"}


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("POST", False)])
def test_a_request_that_broke_after_sending_is_sent_again_only_when_safe(
    replicas: dict[str, tuple[Replica, ServerThread]], method: str, retried: bool
) -> None:
    one, first = replicas["one"]
    with (
        HangUp() as hang_up,
        gateway([hang_up.url, first.url], f"{first.url}/.well-known/jwks.json", 600) as client,
    ):
        # The first origin listed gets the first request: the one that hangs up.
        status = client.request(method, "/auth/me").status_code
        marked = health(client)

    assert hang_up.requests == [f"{method} /me HTTP/1.1".encode()]
    if retried:
        assert status == 200
        assert one.served == [(method, "/me")]
    else:
        assert status == 502
        assert one.served == []
    # A broken exchange is not proof of a dead origin: only failed connections and checks mark down.
    assert marked == {hang_up.url: True, first.url: True}
