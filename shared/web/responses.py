"""The one error shape every service speaks on the wire: ``{"error": code, "detail": text}``.

Handlers raise an :class:`~shared.core.errors.ApiError` subclass; :func:`exception_handlers`
renders it with the right status. Anything else is logged with its traceback and answered with
a bare 500, so internals never reach a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from shared.core.errors import ApiError

logger = logging.getLogger(__name__)


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
