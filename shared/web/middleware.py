"""ASGI middleware every service runs: request ids with access logs, and size and time limits."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.core.errors import (
    ApiError,
    BadRequest,
    HeadersTooLarge,
    PayloadTooLarge,
    RequestTimeout,
)
from shared.core.logs import request_id
from shared.web.request_metrics import RequestMetrics
from shared.web.responses import error_response

logger = logging.getLogger("shared.access")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")


def new_request_id() -> str:
    """A fresh request id: 32 lowercase hex digits of randomness, the shape of ``uuid4().hex``.

    Random rather than a per-process prefix and a counter, which would be cheaper still but tell
    every client how many requests the process has served; the random bytes as they are rather
    than ``uuid4().hex``, whose UUID object costs several times the bytes it is made from.
    """
    return os.urandom(16).hex()


class RequestContextMiddleware:
    """Adopts a well-formed ``X-Request-ID`` or makes one, echoes it, and logs one line per request.

    The id goes back into the scope headers so a proxy forwards the same id upstream. The log
    line has the path without its query string, which is where secrets would leak. ``requests``,
    when given, counts and times each request by its route.
    """

    def __init__(self, app: ASGIApp, requests: RequestMetrics | None = None):
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = []
        incoming: list[bytes] = []
        for header in scope["headers"]:
            if header[0] == REQUEST_ID_HEADER:
                incoming.append(header[1])
            else:
                headers.append(header)
        rid = incoming[0] if len(incoming) == 1 and _VALID_REQUEST_ID.match(incoming[0]) else None
        rid_text = rid.decode() if rid else new_request_id()
        rid_header = (REQUEST_ID_HEADER, rid_text.encode())
        headers.append(rid_header)
        scope["headers"] = headers
        token = request_id.set(rid_text)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.requests is not None:
                self.requests.record(scope, status, time.perf_counter() - started)
            # Asked first: at the usual level the line is dropped, and its fields cost a call each.
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={"status": status, "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
                )
            request_id.reset(token)


class LimitsMiddleware:
    """Refuses what no handler should see: oversized headers (431), bodies too large (413) or too slow (408),
    a malformed ``Content-Length`` or more than one ``Origin`` (400).

    Under :class:`shared.runtime.protocol.HttpProtocol` an oversized head never gets here; the header check
    stays for any other server the app is run under. The body deadline runs from the first read of
    the body, so a client that trickles it cannot extend it.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int, body_timeout: float):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error, framed = self._refusal(scope["headers"])
        if error is not None:
            await error_response(error.status, error.code, error.detail, error.headers)(scope, receive, send)
            return
        if not framed:
            # No Content-Length and no Transfer-Encoding: the request has no body (RFC 9112 6.3), so
            # there is nothing to count or time, and receive has only the disconnect left to say.
            await self.app(scope, receive, send)
            return
        received = 0
        deadline: float | None = None
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, deadline, body_done
            if body_done:
                # What follows the body is only ever the disconnect, which may be waited for forever.
                return await receive()
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.body_timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body did not arrive within {self.body_timeout:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(self._too_large())
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        await self.app(scope, limited_receive, send)

    def _refusal(self, headers: list[tuple[bytes, bytes]]) -> tuple[ApiError | None, bool]:
        """The error the request is refused with, if any, and whether its head announces a body."""
        header_bytes = 0
        origins = 0
        chunked = False
        declared: list[bytes] = []
        for name, value in headers:
            header_bytes += len(name) + len(value) + 4
            if name == b"content-length":
                declared.append(value)
            elif name == b"origin":
                origins += 1
            elif name == b"transfer-encoding":
                chunked = True
        framed = chunked or bool(declared)
        if header_bytes > self.max_header_bytes:
            return HeadersTooLarge(f"request headers exceed {self.max_header_bytes} bytes"), framed
        if origins > 1:
            # Which one a check reads is up to each parser; a request that names two origins has none.
            return BadRequest("the request has more than one Origin header", code="duplicate_origin"), framed
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                length = -1
            if length < 0 or len(declared) > 1:
                return BadRequest("invalid Content-Length"), framed
            if length > self.max_body_bytes:
                return PayloadTooLarge(self._too_large()), framed
        return None, framed

    def _too_large(self) -> str:
        return f"request body exceeds {self.max_body_bytes} bytes"
