"""The one error shape every service speaks: ``{"error": code, "detail": text}``.

Handlers raise an :class:`ApiError` subclass; :func:`exception_handlers` renders it with the
right status. Anything else is logged with its traceback and answered with a bare 500, so
internals never reach a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """Base of every error a client may see. ``status`` and ``code`` are fixed per subclass.

    Tree::

        ApiError
        ├── BadRequest (400 bad_request)
        │   └── ValidationFailed (422 validation_failed)
        ├── Unauthorized (401 unauthenticated)
        │   └── InvalidToken (401 invalid_token, with an RFC 6750 challenge)
        ├── Forbidden (403 forbidden)
        ├── NotFound (404 not_found)
        ├── RequestTimeout (408 request_timeout)
        ├── Conflict (409 conflict)
        ├── PayloadTooLarge (413 payload_too_large)
        ├── UnsupportedMediaType (415 unsupported_media_type)
        ├── TooManyRequests (429 too_many_requests, with Retry-After)
        ├── HeadersTooLarge (431 headers_too_large)
        ├── BadGateway (502 bad_gateway)
        ├── ServiceUnavailable (503 service_unavailable)
        └── GatewayTimeout (504 gateway_timeout)
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, detail: str, *, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code  # type: ignore[misc]  # a narrower code for one instance
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class ValidationFailed(BadRequest):
    status, code = 422, "validation_failed"


class Unauthorized(ApiError):
    status, code = 401, "unauthenticated"


class InvalidToken(Unauthorized):
    """A bearer token was presented and rejected. ``reason`` is for logs and metrics only."""

    code = "invalid_token"

    def __init__(self, reason: str):
        super().__init__(
            "the access token is invalid or expired",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
        self.reason = reason


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class RequestTimeout(ApiError):
    status, code = 408, "request_timeout"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"

    def __init__(self, detail: str, *, retry_after: int):
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class HeadersTooLarge(ApiError):
    status, code = 431, "headers_too_large"


class BadGateway(ApiError):
    status, code = 502, "bad_gateway"


class ServiceUnavailable(ApiError):
    status, code = 503, "service_unavailable"


class GatewayTimeout(ApiError):
    status, code = 504, "gateway_timeout"


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """Build the standard error body. ``extra`` adds members beside ``error`` and ``detail``."""
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status, headers=headers)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if exc.status >= 500:
        logger.warning("answered %d %s: %s", exc.status, exc.code, exc.detail)
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _framework_detail(request: Request, exc: HTTPException) -> str:
    """The router's 404 and 405 in the lowercase prose of every other detail, not "Not Found"."""
    if exc.detail != HTTPStatus(exc.status_code).phrase:
        return str(exc.detail)
    if exc.status_code == 404:
        return "nothing is served at this path"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return f"this path does not take {request.method}; it takes {allowed}".removesuffix("; it takes ")
    return exc.detail.lower()


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, _framework_detail(request, exc), exc.headers)


async def _on_client_disconnect(request: Request, exc: Exception) -> Response:
    # The client left while sending its body: nobody reads this answer, and it is no server fault.
    logger.info("client disconnected before sending its whole body")
    return error_response(400, "client_disconnected", "the client disconnected")


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "an internal error occurred")


def exception_handlers() -> dict[Any, Any]:
    """The handlers every service installs, keyed as Starlette expects."""
    return {
        ApiError: _on_api_error,
        HTTPException: _on_http_exception,
        ClientDisconnect: _on_client_disconnect,
        Exception: _on_unexpected,
    }
