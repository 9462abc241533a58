"""CORS for the bearer-only API routes: which other origins may call them from a browser, and the answers.

Only routes with an audience answer CORS. A browser never attaches their token by itself, so a
page on an allowed origin can read an answer only with a token its user handed it; and those
routes never see the session cookie (:attr:`services.gateway.domain.Route.forwards_cookies`), so
nothing is approved with credentials. The cookie routes (``/auth/*``), the JWKS, the demo page
and forward-auth answer no preflight and carry no ``Access-Control-*`` header from any origin:
a preflight that is never approved is what makes ``X-CSRF-Token`` a defence.

The rules (:func:`parse_origin`, :class:`CorsPolicy`) are pure; :class:`CorsMiddleware` applies
them before routing, since the route table proxies no ``OPTIONS``. It is mounted only when
``CORS_ALLOWED_ORIGINS`` names an origin: off, the gateway does not do a single step more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.web import error_response, name_route

RawHeaders = Sequence[tuple[bytes, bytes]]

# Chromium keeps a preflight answer at most this long whatever Max-Age says.
MAX_AGE_CAP_SECONDS = 7200

# What a cross-origin caller of a bearer API needs to send beyond the safelisted headers: its token
# and a JSON body. Never X-CSRF-Token or Cookie: they belong to the cookie routes.
ALLOWED_REQUEST_HEADERS = b"Authorization, Content-Type"
# What a caller needs to read beyond the safelisted response headers: why its token was refused,
# when to come back, and the id to quote in a support request.
EXPOSED_RESPONSE_HEADERS = b"WWW-Authenticate, Retry-After, X-Request-ID"
PREFLIGHT_VARY = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9_.-]+|\[[0-9a-f:.]+\]")


def parse_origin(value: str) -> str:
    """``value`` written as a browser writes ``Origin``: ``scheme://host[:port]``, lowercase, no default port.

    Raises :class:`ValueError` saying what is wrong. A wildcard is refused, since it would hand the
    API to every site, and so is ``null``, the origin of sandboxed frames and local files, which
    any site can make.
    """
    if "*" in value:
        raise ValueError(f"{value!r}: a wildcard would let every site call the API; list exact origins")
    if value.strip().lower() == "null":
        raise ValueError("'null' is the origin of sandboxed frames and local files, which any site can make")
    parts = urlsplit(value)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) origin (scheme://host[:port])")
    if parts.path not in ("", "/") or "?" in value or "#" in value or "@" in parts.netloc:
        raise ValueError(f"{value!r} is not an origin: no path, query, fragment or credentials")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if not _HOST.fullmatch(host):
        raise ValueError(f"{value!r}: the host must be ASCII (an internationalised name in its xn-- form)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port") from None
    if port == 0:
        raise ValueError(f"{value!r} has an invalid port")
    suffix = f":{port}" if port is not None and port != _DEFAULT_PORTS[parts.scheme] else ""
    return f"{parts.scheme}://{host}{suffix}"


class CorsPolicy:
    """The answers the API routes give to the allowed ``origins``: preflights and actual responses.

    Origins are compared byte for byte with the request's ``Origin``, which a browser writes in
    the form :func:`parse_origin` gives. The allowed origin is echoed, never ``*``, and
    ``Access-Control-Allow-Credentials`` is never sent: the API routes take a token, not a cookie.
    """

    def __init__(self, origins: Iterable[str], *, methods: Iterable[str], max_age: int):
        self.origins = frozenset(origin.encode("ascii") for origin in origins)
        self._preflight = [
            (b"access-control-allow-methods", ", ".join(methods).encode("ascii")),
            (b"access-control-allow-headers", ALLOWED_REQUEST_HEADERS),
            (b"access-control-max-age", str(max_age).encode("ascii")),
            (b"vary", PREFLIGHT_VARY),
        ]

    def preflight_headers(self, origin: bytes) -> list[tuple[bytes, bytes]] | None:
        """The headers approving a preflight from ``origin``, or None when it is not allowed.

        The same approval whatever method and headers the preflight asks for: the browser
        compares, and refuses the request if it needs something not listed (``X-CSRF-Token``, say).
        """
        if origin not in self.origins:
            return None
        return [(b"access-control-allow-origin", origin), *self._preflight]

    def response_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """The headers an API answer gets: the approval for an allowed ``origin``; ``Vary: Origin`` always,
        so a shared cache never hands one origin's answer to another."""
        if origin is not None and origin in self.origins:
            return [
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", EXPOSED_RESPONSE_HEADERS),
                (b"vary", b"Origin"),
            ]
        return [(b"vary", b"Origin")]


def cors_request(headers: RawHeaders) -> tuple[bytes | None, bool]:
    """The request's ``Origin``, if any, and whether it asks ``Access-Control-Request-Method`` (a preflight).

    Two ``Origin`` headers never get here: the shared limits refuse them first.
    """
    origin = None
    asks_method = False
    for name, value in headers:
        if name == b"origin":
            origin = value
        elif name == b"access-control-request-method":
            asks_method = True
    return origin, asks_method


def without_cors_headers(headers: RawHeaders) -> list[tuple[bytes, bytes]]:
    """``headers`` less any ``Access-Control-*`` an upstream sent: on API routes the gateway alone decides."""
    return [(name, value) for name, value in headers if not name.lower().startswith(b"access-control-")]


class CorsMiddleware:
    """Answers preflights to the API routes and marks their answers, by path prefix, before routing.

    Keyed on the route table's audience prefixes rather than wrapped round the proxy: a preflight
    must be answered before the router refuses ``OPTIONS`` with a 405, and the token check's 401
    (raised before the proxy answers) must be readable by an allowed origin too. Any other path
    passes straight through after one prefix test. It sits inside the shared limits, so a request
    with two ``Origin`` headers has already been refused.
    """

    def __init__(self, app: ASGIApp, *, policy: CorsPolicy, prefixes: Iterable[str]):
        self.app = app
        self.policy = policy
        self._encoded = tuple(prefix.encode("ascii") for prefix in prefixes)
        self._prefixes = frozenset(self._encoded)
        self._under = tuple(prefix + b"/" for prefix in self._encoded)

    def is_api_path(self, raw_path: bytes) -> bool:
        """True when ``raw_path`` is a prefix or lies under one, by whole segments as routes match."""
        return raw_path in self._prefixes or raw_path.startswith(self._under)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if not self.is_api_path(raw_path):
            await self.app(scope, receive, send)
            return
        origin, asks_method = cors_request(scope["headers"])
        if origin is not None and asks_method and scope["method"] == "OPTIONS":
            # Counted and traced under its route's prefix, as the proxied requests are.
            prefix = next(p for p in self._encoded if raw_path == p or raw_path.startswith(p + b"/"))
            name_route(scope, prefix.decode("ascii"))
            await self._preflight(origin, scope, receive, send)
            return
        added = self.policy.response_headers(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*without_cors_headers(message.get("headers", ())), *added]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, origin: bytes, scope: Scope, receive: Receive, send: Send) -> None:
        headers = self.policy.preflight_headers(origin)
        if headers is None:
            refusal = error_response(
                403,
                "cors_origin_not_allowed",
                "this origin may not call the API from a browser",
                {"Vary": PREFLIGHT_VARY.decode("ascii")},
            )
            await refusal(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
