"""ASGI middleware every service runs: request ids with access logs, and size limits."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import PayloadTooLarge, error_response
from shared.logs import request_id

logger = logging.getLogger("shared.access")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")


class RequestContextMiddleware:
    """Adopts a well-formed ``X-Request-ID`` or makes one, echoes it, and logs one line per request.

    The id goes back into the scope headers so a proxy forwards the same id upstream. The log
    line has the path without its query string, which is where secrets would leak.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != REQUEST_ID_HEADER]
        incoming = [v for k, v in scope["headers"] if k == REQUEST_ID_HEADER]
        rid = incoming[0] if len(incoming) == 1 and _VALID_REQUEST_ID.match(incoming[0]) else None
        rid_text = rid.decode() if rid else uuid.uuid4().hex
        headers.append((REQUEST_ID_HEADER, rid_text.encode()))
        scope["headers"] = headers
        token = request_id.set(rid_text)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, rid_text.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logger.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={"status": status, "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
            )
            request_id.reset(token)


class LimitsMiddleware:
    """Refuses oversized headers (431) and bodies (413) before the application reads them."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if header_bytes > self.max_header_bytes:
            response = error_response(431, "headers_too_large", "request headers are too large")
            await response(scope, receive, send)
            return
        declared = [v for k, v in scope["headers"] if k == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                length = -1
            if length < 0 or len(declared) > 1:
                await error_response(400, "bad_request", "invalid Content-Length")(scope, receive, send)
                return
            if length > self.max_body_bytes:
                await error_response(413, "payload_too_large", self._too_large())(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(self._too_large())
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> str:
        return f"request body exceeds {self.max_body_bytes} bytes"
