"""Service defaults: every service's app gets the same middleware, error handling and health routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute

from shared.core.errors import BadRequest, UnsupportedMediaType
from shared.core.tokens import loads_strict
from shared.web.edge import EdgeSettings
from shared.web.health import ReadinessCheck, health_routes
from shared.web.metrics import metrics_route, new_registry
from shared.web.middleware import LimitsMiddleware, RequestContextMiddleware
from shared.web.request_metrics import RequestMetrics
from shared.web.responses import exception_handlers
from shared.web.tracing import Tracing

DEFAULT_MAX_BODY_BYTES = 64 * 1024


class Lifespan(Protocol):
    def __call__(self, app: Starlette) -> AbstractAsyncContextManager[Any]: ...


def build_app(
    routes: Sequence[BaseRoute],
    *,
    lifespan: Lifespan,
    readiness: ReadinessCheck,
    metrics: CollectorRegistry | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    edge: EdgeSettings | None = None,
    tracing: Tracing | None = None,
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    """A Starlette app with the shared defaults around the service's own ``routes``.

    ``GET /metrics`` serves ``metrics`` (a fresh registry with process metrics if not given);
    the service registers its own collectors there, typically in its lifespan, and every request is
    counted and timed there by method, route template and status. ``edge`` gives the
    header and body-deadline limits the app enforces itself (defaults if not given). ``tracing``,
    when given, runs around the service's lifespan and puts a server span around every request
    (outermost, so the access line carries the trace id); off, it adds nothing. ``middleware`` is the
    service's own, innermost: a request the limits refuse never reaches it, and what it answers is
    logged, counted and traced like any other answer.
    """
    limits = edge or EdgeSettings()
    registry = new_registry() if metrics is None else metrics
    requests = RequestMetrics()
    registry.register(requests)
    app = Starlette(
        routes=[*health_routes(readiness), metrics_route(registry), *routes],
        lifespan=lifespan if tracing is None else _traced(lifespan, tracing),
        exception_handlers=exception_handlers(),
        middleware=[
            *([Middleware(tracing.wrap)] if tracing is not None and tracing.enabled else []),
            Middleware(RequestContextMiddleware, requests=requests),
            Middleware(
                LimitsMiddleware,
                max_body_bytes=max_body_bytes,
                max_header_bytes=limits.max_header_bytes,
                body_timeout=limits.body_timeout,
            ),
            *middleware,
        ],
    )
    # A slash redirect would carry the service's internal address back through the gateway.
    app.router.redirect_slashes = False
    return app


def _traced(lifespan: Lifespan, tracing: Tracing) -> Lifespan:
    @asynccontextmanager
    async def traced(app: Starlette) -> AsyncIterator[Any]:
        # Tracing first, so the clients the service opens in its lifespan find the tracer running.
        async with tracing.running(), lifespan(app) as state:
            yield state

    return traced


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 415/400 error saying what is wrong."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("the request body must be application/json")
    body = await request.body()
    try:
        document = loads_strict(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON", code="malformed_json") from None
    if not isinstance(document, dict):
        raise BadRequest("the request body must be a JSON object", code="malformed_json")
    return document
