"""Running a service: uvicorn with the project's protocol and logs, and our supervisor for workers."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Protocol

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from shared.core.logs import configure_logging
from shared.core.settings import SettingsError
from shared.runtime.protocol import uvicorn_options
from shared.runtime.workers import Workers
from shared.web.edge import EdgeSettings

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


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
