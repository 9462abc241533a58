"""Service defaults: every service's app gets the same middleware, error handling and health routes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute
from uvicorn.config import STARTUP_FAILURE

from shared.edge import EdgeSettings
from shared.errors import BadRequest, UnsupportedMediaType, exception_handlers
from shared.health import ReadinessCheck, health_routes
from shared.logs import configure_logging
from shared.metrics import metrics_route, new_registry
from shared.middleware import LimitsMiddleware, RequestContextMiddleware
from shared.protocol import uvicorn_options
from shared.settings import SettingsError
from shared.tokens import loads_strict
from shared.workers import Workers

DEFAULT_MAX_BODY_BYTES = 64 * 1024
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class Lifespan(Protocol):
    def __call__(self, app: Starlette) -> AbstractAsyncContextManager[Any]: ...


class ServerSettings(Protocol):
    """The members of a service's settings that say how to serve it."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def workers(self) -> int: ...
    @property
    def log_level(self) -> str: ...
    @property
    def edge(self) -> EdgeSettings: ...


def build_app(
    routes: Sequence[BaseRoute],
    *,
    lifespan: Lifespan,
    readiness: ReadinessCheck,
    metrics: CollectorRegistry | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    edge: EdgeSettings | None = None,
) -> Starlette:
    """A Starlette app with the shared defaults around the service's own ``routes``.

    ``GET /metrics`` serves ``metrics`` (a fresh registry with process metrics if not given);
    the service registers its own collectors there, typically in its lifespan. ``edge`` gives the
    header and body-deadline limits the app enforces itself (defaults if not given).
    """
    limits = edge or EdgeSettings()
    registry = new_registry() if metrics is None else metrics
    app = Starlette(
        routes=[*health_routes(readiness), metrics_route(registry), *routes],
        lifespan=lifespan,
        exception_handlers=exception_handlers(),
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(
                LimitsMiddleware,
                max_body_bytes=max_body_bytes,
                max_header_bytes=limits.max_header_bytes,
                body_timeout=limits.body_timeout,
            ),
        ],
    )
    # A slash redirect would carry the service's internal address back through the gateway.
    app.router.redirect_slashes = False
    return app


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


def serve(
    factory: str,
    *,
    service: str,
    host: str,
    port: int,
    workers: int = 1,
    log_level: str = "info",
    edge: EdgeSettings | None = None,
) -> None:
    """Run ``factory`` (``"package.module:function"``) under uvicorn, JSON logs, the ``edge`` limits."""
    configure_logging(service, log_level)
    config = uvicorn.Config(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        **uvicorn_options(edge or EdgeSettings()),
        # Not uvloop: it resolves names on libuv's pool of four threads, and while a Compose
        # service is stopped Docker's DNS takes ~10 s to fail its name, so a Redis outage left
        # auth answering 503 long after Redis was back (the compose fault tests caught it).
        loop="asyncio",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    if workers > 1:
        sys.exit(Workers(config, workers, service=service, log_level=log_level).run())
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def serve_from_env(
    factory: str, *, service: str, load: Callable[[Mapping[str, str]], ServerSettings]
) -> None:
    """Read the settings first, so a bad variable stops start-up with its name, then :func:`serve`."""
    try:
        settings = load(os.environ)
        if settings.log_level.lower() not in LOG_LEVELS:
            raise SettingsError(
                f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {settings.log_level!r}"
            )
    except SettingsError as exc:
        raise SystemExit(f"{service}: {exc}") from None
    serve(
        factory,
        service=service,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        edge=settings.edge,
    )
