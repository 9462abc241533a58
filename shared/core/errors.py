"""The errors a client may see, as plain exceptions: a status and a short ``code`` per class.

Pure Python, so domain code raises them without loading a web framework;
:mod:`shared.web.responses` renders them as ``{"error": code, "detail": text}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


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
