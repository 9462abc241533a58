"""The gateway's public OpenAPI: merged from the documents the upstreams serve, never from their code.

The merge is tested as data; the fetching with ``httpx.MockTransport`` and a fake clock; the served
document through the real gateway on loopback in front of real upstream routes.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import gzip
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.gateway import balancer, openapi
from services.gateway.descriptions import DescriptionUnavailable, PublicDescription, UpstreamDescriptions
from services.gateway.domain import Route
from shared.core import BadGateway
from shared.web import openapi_document, openapi_error
from tests.security.fuzz_helpers import UPSTREAM_ROUTES, gateway_document, mounted_app, served_gateway
from tests.support.polling import poll
from tests.support.servers import ServerThread

GATEWAY_DIR = Path(openapi.__file__).resolve().parent
MAX_AGE = 60.0
RETRY_AFTER = 2.0


def operation(operation_id: str) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": operation_id, "responses": {"200": {"description": "ok"}}}


def upstream_document(paths: dict[str, Any], schemas: dict[str, Any] | None = None) -> dict[str, Any]:
    """A document as an upstream serves it: its own paths plus the ones every service has."""
    return openapi_document(title="upstream", description="d", paths=paths, schemas=schemas)


AUTH = upstream_document(
    {"/login": {"post": operation("login")}, "/.well-known/jwks.json": {"get": operation("jwks")}},
    {"Login": {"type": "object"}},
)
ORDERS = upstream_document(
    {"/orders": {"get": operation("list_orders")}, "/whoami": {"get": operation("whoami")}},
    {"Order": {"type": "object"}},
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Upstreams:
    """Fake upstream origins behind a MockTransport: what each serves and how often it was asked."""

    def __init__(self, **documents: Any):
        self.answers: dict[str, Callable[[], httpx.Response]] = {
            name: (lambda document=document: httpx.Response(200, json=document))
            for name, document in documents.items()
        }
        self.asked: list[str] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        name = request.url.host.removesuffix(".test")
        self.asked.append(f"{request.url.host}{request.url.path}")
        return self.answers[name]()

    def descriptions(
        self, client: httpx.AsyncClient, clock: Clock, *, max_bytes: int = 1 << 20, timeout: float = 5.0
    ) -> UpstreamDescriptions:
        pools = balancer.pools({name: [f"http://{name}.test"] for name in self.answers}, clock=clock)
        return UpstreamDescriptions(
            client,
            pools,
            max_age=MAX_AGE,
            retry_after=RETRY_AFTER,
            max_bytes=max_bytes,
            timeout=timeout,
            clock=clock,
        )


async def two_chunks() -> AsyncIterator[bytes]:
    for _ in range(2):
        yield b" " * 3000


def mock_client(upstreams: Upstreams) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(upstreams.handle))


# The merge: documents in, document out.


def test_each_upstream_operation_is_published_under_its_route_prefix_and_internal_paths_are_not() -> None:
    paths = openapi.public_document({"auth": AUTH, "orders": ORDERS})["paths"]

    assert paths["/auth/login"]["post"]["operationId"] == "login"
    assert paths["/.well-known/jwks.json"]["get"]["operationId"] == "jwks"
    assert paths["/api/orders"]["get"]["operationId"] == "list_orders"
    assert not any(path.endswith("/whoami") for path in paths)
    for internal in ("/healthz", "/readyz", "/metrics"):
        assert not any(path.endswith(internal) and path != internal for path in paths)
    # /openapi.json is the gateway's own, with the error only the gateway can answer there.
    assert paths["/openapi.json"]["get"]["responses"]["502"] == openapi_error(
        "`description_conflict`: two upstreams define one name differently."
    )
    assert {"502", "503", "504"} <= set(paths["/auth/login"]["post"]["responses"])


def test_a_new_upstream_is_one_row_in_the_route_table() -> None:
    table = (
        Route(prefix="/api/billing", upstream="billing", upstream_prefix="/billing", audience="billing"),
    )
    billing = upstream_document({"/billing/invoices": {"get": operation("invoices")}})

    document = openapi.public_document({"billing": billing}, table)

    assert document["paths"]["/api/billing/invoices"]["get"]["operationId"] == "invoices"


def test_components_of_every_upstream_are_merged_and_one_shared_definition_is_kept_once() -> None:
    document = openapi.public_document({"auth": AUTH, "orders": ORDERS})

    assert {"Error", "Login", "Order"} <= set(document["components"]["schemas"])
    assert openapi.UNAVAILABLE not in document


@pytest.mark.parametrize("section", ["schemas", "securitySchemes"])
def test_one_component_name_defined_differently_by_two_upstreams_fails_loudly(section: str) -> None:
    auth, orders = copy.deepcopy(AUTH), copy.deepcopy(ORDERS)
    auth["components"].setdefault(section, {})["Thing"] = {"type": "object"}
    orders["components"].setdefault(section, {})["Thing"] = {"type": "string"}

    with pytest.raises(openapi.DescriptionConflict, match=r"auth and orders define the \w+ 'Thing'"):
        openapi.public_document({"auth": auth, "orders": orders})


def test_two_upstreams_publishing_one_public_path_fail_loudly() -> None:
    table = (
        Route(prefix="/x", upstream="auth", upstream_prefix="", audience=None),
        Route(prefix="/x", upstream="orders", upstream_prefix="", audience=None),
    )
    auth = upstream_document({"/same": {"get": operation("a")}})
    orders = upstream_document({"/same": {"get": operation("b")}})

    with pytest.raises(openapi.DescriptionConflict, match="both publish /x/same"):
        openapi.public_document({"auth": auth, "orders": orders}, table)


def test_an_upstream_without_a_description_is_left_out_and_named() -> None:
    document = openapi.public_document({"auth": AUTH, "orders": None})

    assert "/auth/login" in document["paths"]
    assert not any(path.startswith("/api/orders") for path in document["paths"])
    assert "Order" not in document["components"]["schemas"]
    assert document[openapi.UNAVAILABLE] == ["orders"]
    assert "could not be fetched: orders" in document["info"]["description"]


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"paths": []},
        {"paths": {"nope": {}}},
        {"paths": {"/x": []}},
        {"paths": {}, "components": {"schemas": 1}},
    ],
)
def test_a_document_of_the_wrong_shape_is_malformed(document: object) -> None:
    with pytest.raises(openapi.MalformedDescription):
        openapi.checked(document)


# Fetching: over HTTP, bounded, cached, refetched after a failure.


async def test_documents_are_fetched_once_and_kept_until_they_are_due() -> None:
    upstreams, clock = Upstreams(auth=AUTH, orders=ORDERS), Clock()
    async with mock_client(upstreams) as client:
        descriptions = upstreams.descriptions(client, clock)
        first = await descriptions.current()
        clock.now += MAX_AGE - 1
        await descriptions.current()
        assert sorted(upstreams.asked) == ["auth.test/openapi.json", "orders.test/openapi.json"]
        clock.now += 1
        await descriptions.current()

    assert first == {"auth": AUTH, "orders": ORDERS}
    assert len(upstreams.asked) == 4


async def test_concurrent_requests_share_one_round_of_fetches() -> None:
    upstreams = Upstreams(auth=AUTH, orders=ORDERS)
    async with mock_client(upstreams) as client:
        descriptions = upstreams.descriptions(client, Clock())
        results = await asyncio.gather(*(descriptions.current() for _ in range(10)))

    assert all(result == results[0] for result in results)
    assert len(upstreams.asked) == 2


async def test_an_unreachable_upstream_is_left_out_then_asked_again_after_the_retry_interval() -> None:
    upstreams, clock = Upstreams(auth=AUTH, orders=ORDERS), Clock()

    def refused() -> httpx.Response:
        raise httpx.ConnectError("refused")

    upstreams.answers["orders"] = refused
    async with mock_client(upstreams) as client:
        descriptions = upstreams.descriptions(client, clock)
        assert (await descriptions.current())["orders"] is None
        clock.now += RETRY_AFTER - 0.5
        assert (await descriptions.current())["orders"] is None
        assert upstreams.asked.count("orders.test/openapi.json") == 1, "asked again before the retry interval"
        upstreams.answers["orders"] = lambda: httpx.Response(200, json=ORDERS)
        clock.now += 0.5
        assert (await descriptions.current())["orders"] == ORDERS


async def test_a_failed_refetch_keeps_the_last_good_document() -> None:
    upstreams, clock = Upstreams(auth=AUTH, orders=ORDERS), Clock()
    async with mock_client(upstreams) as client:
        descriptions = upstreams.descriptions(client, clock)
        await descriptions.current()
        upstreams.answers["orders"] = lambda: httpx.Response(503, json={"error": "x", "detail": "y"})
        clock.now += MAX_AGE
        assert (await descriptions.current())["orders"] == ORDERS


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda: httpx.Response(404, json={"error": "not_found", "detail": "no"}), "HTTP 404"),
        (lambda: httpx.Response(200, content=b"<html>"), "no usable description"),
        (lambda: httpx.Response(200, json={"paths": "nope"}), "no usable description"),
        (lambda: httpx.Response(200, content=b" " * 5000), "over 4096"),
        (
            lambda: httpx.Response(
                200, content=gzip.compress(json.dumps(AUTH).encode()), headers={"Content-Encoding": "gzip"}
            ),
            "compressed",
        ),
        # Streamed without a length: the cap counts what arrives.
        (lambda: httpx.Response(200, content=two_chunks()), "sent over 4096 bytes"),
    ],
)
async def test_an_answer_that_is_not_a_usable_description_is_refused(
    answer: Callable[[], httpx.Response], reason: str
) -> None:
    upstreams = Upstreams(auth=AUTH)
    upstreams.answers["auth"] = answer
    async with mock_client(upstreams) as client:
        descriptions = upstreams.descriptions(client, Clock(), max_bytes=4096)
        with pytest.raises(DescriptionUnavailable, match=reason):
            await descriptions.fetch("auth")
        assert (await descriptions.current())["auth"] is None


async def test_an_upstream_that_never_answers_is_given_up_after_the_timeout() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("not cancelled")

    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as client:
        pools = balancer.pools({"auth": ["http://auth.test"]})
        descriptions = UpstreamDescriptions(
            client, pools, max_age=1, retry_after=1, max_bytes=4096, timeout=0.2
        )
        async with asyncio.timeout(5):
            with pytest.raises(DescriptionUnavailable, match=r"within 0\.2 s"):
                await descriptions.fetch("auth")


async def test_the_description_comes_from_an_origin_the_health_checks_pass() -> None:
    asked: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        return httpx.Response(200, json=AUTH)

    pools = balancer.pools({"auth": ["http://a.test", "http://b.test"]})
    pools["auth"].mark_down("http://a.test", "health_check", "down")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        descriptions = UpstreamDescriptions(
            client, pools, max_age=1, retry_after=1, max_bytes=1 << 20, timeout=1
        )
        await descriptions.fetch("auth")
    assert asked == ["b.test"]


async def test_conflicting_upstream_descriptions_are_a_502_description_conflict() -> None:
    auth, orders = copy.deepcopy(AUTH), copy.deepcopy(ORDERS)
    orders["components"]["schemas"]["Login"] = {"type": "string"}
    upstreams = Upstreams(auth=auth, orders=orders)
    async with mock_client(upstreams) as client:
        public = PublicDescription(upstreams.descriptions(client, Clock()))
        with pytest.raises(BadGateway) as caught:
            await public.render()
    assert caught.value.code == "description_conflict"


# The gateway serving it, and what it does not import.


def test_the_gateway_serves_the_document_its_upstreams_routes_describe() -> None:
    with served_gateway() as gateway:
        response = httpx.get(f"{gateway.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert "cache-control" not in response.headers
    assert response.json() == gateway_document()
    assert openapi.UNAVAILABLE not in response.json()


def test_while_an_upstream_fails_its_operations_are_left_out_until_it_answers_again() -> None:
    orders = mounted_app(UPSTREAM_ROUTES["orders"])
    up = threading.Event()

    async def orders_or_failing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not up.is_set():
            await Response(status_code=503)(scope, receive, send)
        else:
            await orders(scope, receive, send)

    with (
        ServerThread(orders_or_failing) as stand_in,
        served_gateway(ORDERS_URL=stand_in.url, UPSTREAM_HEALTH_INTERVAL_SECONDS="0.2") as gateway,
    ):
        partial = httpx.get(f"{gateway.url}/openapi.json", timeout=10)
        assert partial.status_code == 200
        assert partial.headers["cache-control"] == "no-store"
        assert partial.json()[openapi.UNAVAILABLE] == ["orders"]
        assert "/auth/login" in partial.json()["paths"]
        assert not any(path.startswith("/api/orders") for path in partial.json()["paths"])
        up.set()

        def described_again() -> bool:
            answer = httpx.get(f"{gateway.url}/openapi.json", timeout=10)
            return openapi.UNAVAILABLE not in answer.json()

        poll(described_again, within=10, what="orders described again")
        complete = httpx.get(f"{gateway.url}/openapi.json", timeout=10)
    assert "cache-control" not in complete.headers
    assert complete.json() == gateway_document()


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("path", sorted(GATEWAY_DIR.rglob("*.py")), ids=lambda path: path.name)
def test_no_gateway_module_imports_another_services_code(path: Path) -> None:
    foreign = {
        name for name in _imported_modules(path) if name.startswith(("services.auth", "services.orders"))
    }
    assert foreign == set()


def test_loading_the_whole_gateway_loads_no_other_service() -> None:
    code = (
        "import sys, services.gateway.__main__, services.gateway.app;"
        "print(sorted(m for m in sys.modules if m.startswith(('services.auth', 'services.orders'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
