"""Tracing: the OTEL_* settings, nothing at all when off, and a server span with the trace id in the logs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from shared.core import SettingsError, configure_logging
from shared.web import Tracing, TracingSettings, build_app


@pytest.mark.parametrize(
    ("environ", "endpoint"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "http://collector:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http://collector:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c/x"}, "https://c/x"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "http://localhost:4318/v1/traces"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, None),
    ],
)
def test_tracing_is_on_only_where_otel_variables_name_an_exporter(
    environ: dict[str, str], endpoint: str | None
) -> None:
    settings = TracingSettings.from_env(environ)

    assert settings.endpoint == endpoint
    assert settings.enabled is (endpoint is not None)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_what_the_services_cannot_honour_stops_them_naming_the_variable(
    environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        TracingSettings.from_env(environ)


def test_the_service_name_variable_wins() -> None:
    settings = TracingSettings.from_env({"OTEL_SERVICE_NAME": "edge", "OTEL_TRACES_EXPORTER": "otlp"})

    assert Tracing(settings, "gateway").service == "edge"


async def _hello(request: Request) -> JSONResponse:
    logging.getLogger("tests.tracing").info("handling")
    return JSONResponse({"ok": True})


def _app(tracing: Tracing) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {}

    async def ready(request: Request) -> dict[str, Any]:
        return {}

    return build_app(
        [Route("/items/{item_id}", _hello, methods=["GET"])],
        lifespan=lifespan,
        readiness=ready,
        tracing=tracing,
    )


def test_off_adds_no_middleware_and_spans_are_one_shared_no_op() -> None:
    tracing = Tracing(TracingSettings(), "orders")
    plain = _app(Tracing(TracingSettings(), "orders"))

    assert len(plain.user_middleware) == 2  # the request context and the limits, nothing more
    assert tracing.span("a") is tracing.span("b", {"x": 1})
    with TestClient(plain) as client:
        assert client.get("/items/1").status_code == 200


def test_off_never_loads_the_sdk() -> None:
    probe = (
        "import sys, asyncio\n"
        "from shared.web import Tracing, TracingSettings\n"
        "tracing = Tracing(TracingSettings(), 'orders')\n"
        "async def main():\n"
        "    async with tracing.running():\n"
        "        with tracing.span('x'):\n"
        "            headers = []\n"
        "            tracing.inject(headers)\n"
        "            assert headers == []\n"
        "asyncio.run(main())\n"
        "print(sorted(name for name in sys.modules if name.startswith('opentelemetry')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_request_is_a_server_span_named_by_its_template_and_logged_with_its_trace_id() -> None:
    exporter = InMemorySpanExporter()
    stream = io.StringIO()
    configure_logging("orders", environ={"LOG_FORMAT": "json"}, stream=stream)
    try:
        with TestClient(_app(Tracing(TracingSettings(), "orders", exporter=exporter))) as client:
            response = client.get(
                "/items/secret-looking-id",
                headers={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"},
            )
    finally:
        logging.getLogger().handlers[:] = []

    assert response.status_code == 200
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /items/{item_id}"
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
    }
    # The caller's trace continued, as auth and orders do behind the gateway.
    assert format(span.context.trace_id, "032x") == "ab" * 16
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {line["msg"]: line.get("trace_id") for line in lines}["handling"] == "ab" * 16
    assert all("secret-looking-id" not in str(value) for value in (span.attributes or {}).values())
