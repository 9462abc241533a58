"""A span per Redis command and per pipeline, naming the command and never its keys or values.

Keys hold user ids and session handles, and values hold password hashes and CSRF tokens, so a
span says only which command ran (``EVALSHA``, ``HGETALL``) and how it ended. The wrapping is per
client object, not per class as OpenTelemetry's own Redis instrumentation does it: another client
in the same process (a test's, the CLI's) stays untouched, and with tracing off nothing is wrapped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from services.auth.redis_client import Client
from shared.web import Tracing

_SYSTEM = {"db.system.name": "redis"}

Call: TypeAlias = Callable[..., Awaitable[Any]]


def traced(client: Client, tracing: Tracing) -> Client:
    """``client`` with its commands and pipelines traced by ``tracing``; unchanged when tracing is off."""
    if not tracing.enabled:
        return client
    client.execute_command = _traced_command(client.execute_command, tracing)  # type: ignore[method-assign,assignment]
    new_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = new_pipeline(*args, **kwargs)
        pipe.execute = _traced_pipeline(pipe.execute, tracing)  # type: ignore[method-assign,assignment]
        return pipe

    client.pipeline = pipeline  # type: ignore[method-assign]
    return client


def _traced_command(
    execute: Callable[..., Awaitable[Any]], tracing: Tracing
) -> Callable[..., Awaitable[Any]]:
    async def execute_command(*args: Any, **options: Any) -> Any:
        command = str(args[0]).upper() if args else "UNKNOWN"
        with tracing.span(f"redis {command}", {**_SYSTEM, "db.operation.name": command}, kind="client"):
            return await execute(*args, **options)

    return execute_command


def _traced_pipeline(
    execute: Callable[..., Awaitable[Any]], tracing: Tracing
) -> Callable[..., Awaitable[Any]]:
    async def execute_pipeline(*args: Any, **kwargs: Any) -> Any:
        with tracing.span("redis PIPELINE", {**_SYSTEM, "db.operation.name": "PIPELINE"}, kind="client"):
            return await execute(*args, **kwargs)

    return execute_pipeline
