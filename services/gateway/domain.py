"""The gateway's rules: the route table as data, and pure functions over paths and headers."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from shared.core import BadRequest, NotFound

RawHeaders = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Route:
    """Requests under ``prefix`` go to ``upstream`` with ``prefix`` replaced by ``upstream_prefix``.

    With an ``audience``, the gateway verifies a bearer token for it before proxying. ``holds``
    is how long the upstream may hold a request on purpose before answering (a long-poll): the
    wait for the answer's head is the upstream timeout plus that.
    """

    prefix: str
    upstream: str
    upstream_prefix: str
    audience: str | None
    holds: float = 0.0

    @property
    def forwards_cookies(self) -> bool:
        """Cookies cross only where no token is required.

        A bearer API has no use for the session cookie, so it never sees one and cannot set one
        (which would let it overwrite the session on the public origin).
        """
        return self.audience is None


# The longest auth holds a long-poll of its revocation feed (``Prefer: wait``, capped there).
REVOCATIONS_HOLD_SECONDS = 30.0

ROUTE_TABLE: tuple[Route, ...] = (
    Route(prefix="/auth", upstream="auth", upstream_prefix="", audience=None),
    # Before the rest of /.well-known: the one route whose answer may come late by design.
    Route(
        prefix="/.well-known/revocations.json",
        upstream="auth",
        upstream_prefix="/.well-known/revocations.json",
        audience=None,
        holds=REVOCATIONS_HOLD_SECONDS,
    ),
    Route(prefix="/.well-known", upstream="auth", upstream_prefix="/.well-known", audience=None),
    Route(prefix="/api/orders", upstream="orders", upstream_prefix="/orders", audience="orders"),
)


# An upstream's probes, metrics and description are for the cluster, not the public: readiness
# detail names dependencies and their state, and an upstream's description its private paths (the
# gateway publishes its own). Each entry covers its subpaths too (``/metrics/raw``).
INTERNAL_PATHS: frozenset[str] = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


@dataclass(frozen=True)
class Target:
    """Where one request goes: its route and the upstream path, still percent-encoded."""

    route: Route
    path: str


def upstream_names(table: Iterable[Route]) -> tuple[str, ...]:
    """Every upstream the table routes to, each once, in table order: the gateway knows no other."""
    return tuple(dict.fromkeys(route.upstream for route in table))


def audiences(table: Iterable[Route]) -> tuple[str, ...]:
    """Every audience the table verifies tokens for, each once, in table order."""
    return tuple(dict.fromkeys(route.audience for route in table if route.audience is not None))


def _check_path(raw_path: str) -> None:
    # Upstreams decode the path again, so a segment that decodes to a dot segment or hides a
    # separator could climb out of the prefix the gateway matched.
    if not raw_path.startswith("/") or not all("!" <= char <= "~" for char in raw_path):
        raise BadRequest("the request path is malformed", code="invalid_path")
    for segment in raw_path.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or any(char in decoded for char in "/\\\x00"):
            raise BadRequest(
                "the request path contains a dot segment or an encoded separator", code="invalid_path"
            )


def is_internal(upstream_path: str, internal: Collection[str] = INTERNAL_PATHS) -> bool:
    """True when ``upstream_path`` is one of ``internal`` or lies under one.

    Compared the way a lenient upstream might read the path (percent-decoded, case-folded,
    empty segments dropped), so ``/%72eadyz``, ``/READYZ`` and ``//readyz/`` count too.
    """
    segments = [segment for segment in unquote(upstream_path).casefold().split("/") if segment]
    path = "/" + "/".join(segments)
    return any(path == entry or path.startswith(entry + "/") for entry in internal)


def resolve(raw_path: str, table: Sequence[Route] = ROUTE_TABLE) -> Target:
    """The target of a raw (percent-encoded) request path; the first route that matches wins.

    Prefixes match whole segments only: ``/api/orders`` matches ``/api/orders`` and
    ``/api/orders/...`` but not ``/api/ordersX``. Raises :class:`BadRequest` for a path that
    could escape its prefix and :class:`NotFound` when no route matches or the upstream path is
    one of :data:`INTERNAL_PATHS`.
    """
    _check_path(raw_path)
    for route in table:
        if raw_path == route.prefix or raw_path.startswith(route.prefix + "/"):
            path = (route.upstream_prefix + raw_path[len(route.prefix) :]) or "/"
            if is_internal(path):
                break
            return Target(route=route, path=path)
    raise NotFound("no route for this path")


def request_target(target: Target, query: bytes) -> bytes:
    """The request target for the upstream: the rewritten path and the client's query, byte for byte."""
    # Raw non-ASCII or control bytes are not a URI (RFC 3986); browsers percent-encode them.
    if not all(0x21 <= byte <= 0x7E for byte in query):
        raise BadRequest("the query string is malformed", code="invalid_query")
    return target.path.encode("ascii") + (b"?" + query if query else b"")


def has_body(headers: RawHeaders) -> bool:
    """True when the request framing announces a body (a length or a transfer coding)."""
    return any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers)


_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)

# Identity and routing claims only the gateway may make; a client sending them is spoofing.
# X-Original-* and X-Rewrite-URL are path overrides some frameworks honour behind a proxy.
_UNTRUSTED_PREFIXES = (b"x-user-", b"x-auth-", b"x-forwarded-", b"x-client-", b"x-original-")
_UNTRUSTED = frozenset({b"forwarded", b"x-real-ip", b"x-rewrite-url"})


def _connection_options(headers: RawHeaders) -> frozenset[bytes]:
    """The header names listed in ``Connection``, which are hop-by-hop for this one message."""
    return frozenset(
        option.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for option in value.split(b",")
        if option.strip()
    )


def _is_hop_by_hop(name: bytes, options: frozenset[bytes]) -> bool:
    return name in _HOP_BY_HOP or name.startswith(b"proxy-") or name in options


def _is_untrusted(name: bytes) -> bool:
    return name in _UNTRUSTED or name.startswith(_UNTRUSTED_PREFIXES)


def _forwards_request_header(name: bytes, route: Route, options: frozenset[bytes]) -> bool:
    if _is_hop_by_hop(name, options) or _is_untrusted(name):
        return False
    if name == b"cookie":
        return route.forwards_cookies
    # The gateway sends the body it buffered, framed by its own count of the bytes it holds; and its
    # own server has answered any 100-continue, so the upstream must not wait for one.
    return name not in (b"content-length", b"expect")


def upstream_request_headers(
    headers: RawHeaders, route: Route, *, upstream_host: bytes, client_ip: bytes, scheme: bytes
) -> list[tuple[bytes, bytes]]:
    """The headers to send upstream for a client request.

    Hop-by-hop, framing and client-supplied identity headers are dropped; ``Host`` names the
    upstream; ``X-Forwarded-For/Proto/Host`` state the gateway's own view of the client. Values
    lose the spaces and tabs around them and otherwise pass unchanged (``Authorization`` and
    ``X-Request-ID`` among them).
    """
    options = _connection_options(headers)
    public_host: bytes | None = None
    forwarded: list[tuple[bytes, bytes]] = []
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        # Whitespace around a value is not part of it (RFC 9110 5.5), and the upstream client
        # refuses to send a value that keeps it.
        value = raw_value.strip(b" \t")
        if name == b"host":
            public_host = public_host or value
        elif _forwards_request_header(name, route, options):
            forwarded.append((name, value))
    forwarded += [(b"host", upstream_host), (b"x-forwarded-for", client_ip), (b"x-forwarded-proto", scheme)]
    if public_host is not None:
        forwarded.append((b"x-forwarded-host", public_host))
    return forwarded


def client_response_headers(headers: RawHeaders, route: Route) -> list[tuple[bytes, bytes]]:
    """The headers to send the client for an upstream response, every ``Set-Cookie`` kept.

    ``Date`` and ``X-Request-ID`` are dropped because the gateway's own server and middleware
    add them, and two of either would confuse the client.
    """
    options = _connection_options(headers)
    kept: list[tuple[bytes, bytes]] = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if _is_hop_by_hop(name, options) or name in (b"date", b"x-request-id"):
            continue
        if name == b"set-cookie" and not route.forwards_cookies:
            continue
        kept.append((name, value))
    return kept
