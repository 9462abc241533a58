"""Per-route request counts and latency histograms: buckets, labels, and a bound a client cannot lift."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from shared.web import build_app, name_route
from shared.web import request_metrics as rm
from shared.web.request_metrics import RequestMetrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parsed = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return parsed


def scrape(metrics: RequestMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(metrics)
    return samples(generate_latest(registry).decode())


def count(
    parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], method: str, route: str, status: str
) -> float:
    return parsed[("http_requests_total", (("method", method), ("route", route), ("status", status)))]


def bucket(
    parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], method: str, route: str, le: str
) -> float:
    return parsed[
        ("http_request_duration_seconds_bucket", (("le", le), ("method", method), ("route", route)))
    ]


class _Templated:
    def __init__(self, path: str):
        self.path = path


def test_observations_land_in_cumulative_le_buckets_with_their_sum() -> None:
    metrics = RequestMetrics(buckets=(0.001, 0.01, 0.1))
    scope = {"method": "GET", "route": _Templated("/orders/{order_id}")}
    for seconds in (0.0005, 0.001, 0.002, 0.01, 0.05, 3.0):
        metrics.record(scope, 200, seconds)

    parsed = scrape(metrics)

    route = "/orders/{order_id}"
    # "le" is inclusive: an observation equal to a bound belongs to that bucket.
    assert [bucket(parsed, "GET", route, le) for le in ("0.001", "0.01", "0.1", "+Inf")] == [2, 4, 5, 6]
    assert parsed[("http_request_duration_seconds_count", (("method", "GET"), ("route", route)))] == 6
    assert parsed[
        ("http_request_duration_seconds_sum", (("method", "GET"), ("route", route)))
    ] == pytest.approx(3.0635)
    assert count(parsed, "GET", route, "200") == 6


def test_statuses_are_counted_apart_and_share_the_routes_histogram() -> None:
    metrics = RequestMetrics()
    scope = {"method": "POST", "route": _Templated("/orders")}
    metrics.record(scope, 201, 0.002)
    metrics.record(scope, 201, 0.002)
    metrics.record(scope, 422, 0.001)

    parsed = scrape(metrics)

    assert count(parsed, "POST", "/orders", "201") == 2
    assert count(parsed, "POST", "/orders", "422") == 1
    assert parsed[("http_request_duration_seconds_count", (("method", "POST"), ("route", "/orders")))] == 3


def test_a_name_the_handler_gave_wins_over_the_routers_template() -> None:
    metrics = RequestMetrics()
    scope = {"method": "GET", "route": _Templated("/{path:path}")}
    name_route(scope, "/api/orders")
    metrics.record(scope, 200, 0.001)

    assert count(scrape(metrics), "GET", "/api/orders", "200") == 1


def test_buckets_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        RequestMetrics(buckets=(0.1, 0.01))
    with pytest.raises(ValueError, match="increasing"):
        RequestMetrics(buckets=())


def test_odd_methods_and_unnamed_routes_collapse_into_one_label_each() -> None:
    metrics = RequestMetrics()
    for _ in range(300):
        metrics.record({"method": secrets.token_hex(4).upper()}, 404, 0.0001)

    parsed = scrape(metrics)

    assert count(parsed, "OTHER", "unmatched", "404") == 300
    assert len([key for key in parsed if key[0] == "http_requests_total"]) == 1


def test_routes_beyond_the_bound_share_one_label(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rm, "MAX_ROUTES", 5)
    metrics = RequestMetrics()
    for index in range(50):
        metrics.record({"method": "GET", "route": _Templated(f"/r{index}")}, 200, 0.001)

    parsed = scrape(metrics)
    routes = {dict(labels)["route"] for name, labels in parsed if name == "http_requests_total"}

    assert routes == {"/r0", "/r1", "/r2", "/r3", "/r4", "other"}
    assert count(parsed, "GET", "other", "200") == 45


async def _order(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["order_id"]})


@contextlib.asynccontextmanager
async def _nothing(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {}


async def _ready(request: Request) -> dict[str, Any]:
    return {"ok": True}


@pytest.fixture
def client() -> TestClient:
    return TestClient(
        build_app([Route("/orders/{order_id}", _order, methods=["GET"])], lifespan=_nothing, readiness=_ready)
    )


def test_random_paths_from_a_client_never_become_labels(client: TestClient) -> None:
    with client:
        for _ in range(200):
            assert client.get(f"/orders/{secrets.token_hex(8)}").status_code == 200
            assert client.get(f"/{secrets.token_hex(8)}/{secrets.token_hex(4)}").status_code == 404
            assert client.post(f"/orders/{secrets.token_hex(8)}").status_code == 405
        parsed = samples(client.get("/metrics").text)

    series = sorted(labels for name, labels in parsed if name == "http_requests_total")
    assert series == [
        (("method", "GET"), ("route", "/orders/{order_id}"), ("status", "200")),
        (("method", "GET"), ("route", "unmatched"), ("status", "404")),
        (("method", "POST"), ("route", "/orders/{order_id}"), ("status", "405")),
    ]
    assert count(parsed, "GET", "/orders/{order_id}", "200") == 200
    histograms = {labels for name, labels in parsed if name == "http_request_duration_seconds_count"}
    assert len(histograms) == 3
