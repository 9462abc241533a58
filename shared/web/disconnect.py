"""The server's notice that a request's client has gone, offered to applications as an ASGI scope extension.

ASGI reports a disconnect only through ``receive``, and only to an application that asks: one
that must notice a client leaving while it waits on something else (a proxy waiting for its
upstream) has to keep a task blocked in ``receive`` for every request. Profiles of the
gateway put that task at a twelfth of its time per proxied request. The project's own
protocol (:class:`shared.runtime.protocol.HttpProtocol`) offers instead the future it
completes when the connection is lost: a callback on it costs no task and no ``receive``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

#: The key in ``scope["extensions"]`` under which the server puts the connection's future.
DISCONNECT_EXTENSION = "shared.disconnect"
#: The key of the future the server completes when it starts shutting down.
DRAINING_EXTENSION = "shared.draining"


def disconnect_future(scope: Mapping[str, Any]) -> asyncio.Future[None] | None:
    """The future the server completes when the request's connection is lost.

    None when the server offers none (a test client, another ASGI server): the application then
    has to ask ``receive``. The future belongs to the connection, so it also completes after this
    request's response has been sent; only a watch held while the response is pending means the
    client left this request.
    """
    extensions = scope.get("extensions")
    if not extensions:
        return None
    future: asyncio.Future[None] | None = extensions.get(DISCONNECT_EXTENSION)
    return future


def draining_future(scope: Mapping[str, Any]) -> asyncio.Future[None] | None:
    """The future the server completes when it starts to shut down, or None under another server.

    uvicorn waits for requests in flight before the application's lifespan hears of a shutdown,
    so a request held open on purpose (a long-poll) must watch this to let the process stop.
    """
    extensions = scope.get("extensions")
    if not extensions:
        return None
    future: asyncio.Future[None] | None = extensions.get(DRAINING_EXTENSION)
    return future
