"""The gateway's native routes and the orders API over httpx, with one error shape for every failure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

DEFAULT_GATEWAY = "http://localhost:8000"
# Every phase bounded: a gateway that accepts the connection and never answers costs a user
# seconds, not a hung terminal. Connecting gets less than answering, which may wait on Redis.
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
USER_AGENT = "hybrid-auth-cli/0.1"
# The reason an answer that is not the documented {"error", "detail"} is shown at all.
_MAX_DETAIL_CHARS = 200


class ApiError(Exception):
    """The gateway answered with an error: ``{"error": code, "detail": text}`` and its status."""

    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after

    def __str__(self) -> str:
        wait = f" (retry after {self.retry_after} s)" if self.retry_after is not None else ""
        return f"{self.status} {self.code}: {self.detail}{wait}"


class Unreachable(Exception):
    """No answer from the gateway: refused, reset, timed out or not an HTTP server."""


class BadGatewayUrl(ValueError):
    """A ``--gateway`` this client will not send a refresh handle to."""


@dataclass(frozen=True)
class LoggedIn:
    """A native login's answer."""

    user_id: str
    email: str
    role: str
    refresh_handle: str = field(repr=False)


@dataclass(frozen=True)
class Minted:
    """A mint's answer: the access token and the handle that replaces the one presented."""

    access_token: str = field(repr=False)
    expires_in: int
    refresh_handle: str = field(repr=False)


def check_gateway_url(url: str) -> str:
    """``url`` without a trailing slash, if a refresh handle may be sent there.

    Plain http only to a loopback host, as browsers allow Secure cookies: anywhere else the
    handle, which is as good as a password until it rotates, would cross the network readable.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadGatewayUrl(f"{url!r} is not an http(s) URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise BadGatewayUrl(f"{url!r}: give the gateway's origin without credentials, query or fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise BadGatewayUrl(f"{url!r}: plain http is allowed to localhost only; use https")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GatewayApi:
    """The calls the client makes, each a method that returns a typed answer or raises.

    Raises :class:`ApiError` for an error answer and :class:`Unreachable` when there is none.
    """

    def __init__(self, base_url: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            timeout=TIMEOUT,
            # A redirect would carry the request body, handle included, somewhere else.
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
            # Plain http goes to loopback only: a proxy from the environment (HTTP_PROXY) would
            # read the handle in the clear on its way to a server on this very machine. Over
            # https a proxy sees a tunnel, and the environment's proxies and CA bundle apply.
            trust_env=urlsplit(base_url).scheme == "https",
        )

    def __enter__(self) -> GatewayApi:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def login(self, email: str, password: str) -> LoggedIn:
        body = self._json(
            self._send("POST", "/auth/native/login", json={"email": email, "password": password})
        )
        user = body.get("user")
        if not isinstance(user, dict):
            raise _unexpected(200, "login answered without a user")
        return LoggedIn(
            user_id=_field(user, "id"),
            email=_field(user, "email"),
            role=_field(user, "role"),
            refresh_handle=_field(body, "refresh_handle"),
        )

    def mint(self, refresh_handle: str, audience: str) -> Minted:
        """Trade the handle for an access token and the handle's successor."""
        body = self._json(
            self._send(
                "POST", "/auth/native/token", json={"refresh_handle": refresh_handle, "audience": audience}
            )
        )
        expires_in = body.get("expires_in")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
            raise _unexpected(200, "the token answer has no positive expires_in")
        return Minted(
            access_token=_field(body, "access_token"),
            expires_in=expires_in,
            refresh_handle=_field(body, "refresh_handle"),
        )

    def logout(self, refresh_handle: str) -> None:
        self._send("POST", "/auth/native/logout", json={"refresh_handle": refresh_handle})

    def orders(self, access_token: str, *, limit: int | None = None) -> dict[str, Any]:
        params = {"limit": str(limit)} if limit is not None else None
        response = self._send(
            "GET", "/api/orders", params=params, headers={"Authorization": f"Bearer {access_token}"}
        )
        return self._json(response)

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **options)
        except httpx.TimeoutException as error:
            raise Unreachable(
                f"{self._http.base_url} did not answer in time ({type(error).__name__})"
            ) from None
        except httpx.TransportError as error:
            raise Unreachable(f"cannot reach {self._http.base_url}: {error}") from None
        if response.is_success:
            return response
        raise _error_of(response)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise _unexpected(response.status_code, "the answer is not JSON") from None
        if not isinstance(body, dict):
            raise _unexpected(response.status_code, "the answer is not a JSON object")
        return body


def _error_of(response: httpx.Response) -> ApiError:
    """The server's ``{"error", "detail"}``; for anything else (a proxy's HTML page), the status."""
    retry_after = response.headers.get("Retry-After", "")
    wait = int(retry_after) if retry_after.isdigit() else None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        detail = body.get("detail")
        return ApiError(response.status_code, body["error"], detail if isinstance(detail, str) else "", wait)
    reason = response.reason_phrase or "error"
    return ApiError(response.status_code, f"http_{response.status_code}", reason[:_MAX_DETAIL_CHARS], wait)


def _unexpected(status: int, detail: str) -> ApiError:
    return ApiError(status, "unexpected_answer", detail)


def _field(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise _unexpected(200, f"the answer has no {key}")
    return value
