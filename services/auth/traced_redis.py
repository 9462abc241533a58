"""A span per Redis command and per pipeline, naming the command and never its keys or values.

Keys hold user ids and session handles, and values hold password hashes and CSRF tokens, so a
span says only which command ran (``EVALSHA``, ``HGETALL``) and how it ended. The wrapping is per
client object, not per class as OpenTelemetry's own Redis instrumentation does it: another client
in the same process (a test's, the CLI's) stays untouched, and with tracing off nothing is wrapped.
"""

from __future__ import annotations

from typing import Any

from services.auth.redis_client import Client, Namer, Send, around_sends
from shared.web import Tracing

_SYSTEM = {"db.system.name": "redis"}


def traced(client: Client, tracing: Tracing) -> Client:
    """``client`` with its commands and pipelines traced by ``tracing``; unchanged when tracing is off."""
    if not tracing.enabled:
        return client

    def wrap(send: Send, name: Namer) -> Send:
        async def traced_send(*args: Any, **kwargs: Any) -> Any:
            command = name(*args, **kwargs)
            with tracing.span(f"redis {command}", {**_SYSTEM, "db.operation.name": command}, kind="client"):
                return await send(*args, **kwargs)

        return traced_send

    return around_sends(client, wrap)
