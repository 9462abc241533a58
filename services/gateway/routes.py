"""HTTP mapping: the demo page and its files, then every other path through the route table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.datastructures import URLPath
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send

from services.gateway import assets, domain, forward_auth, proxy
from services.gateway.balancer import Pool
from services.gateway.descriptions import PublicDescription
from services.gateway.upstream import UpstreamPool
from shared.core import NotFound, ProxyNetwork, client_ip
from shared.web import TokenVerifier, Tracing, disconnect_future, name_route
from shared.web.openapi import OPENAPI_MEDIA_TYPE


def _asset_response(request: Request, name: str) -> Response:
    loaded: Mapping[str, assets.Asset] = request.state.assets
    item = loaded.get(name)
    if item is None:
        raise NotFound("no such file")
    headers = assets.asset_headers(item)
    if assets.etag_matches(request.headers.get("if-none-match"), item.etag):
        return Response(status_code=304, headers=headers)
    return Response(item.body, headers=headers)


async def page(request: Request) -> Response:
    """``GET /``: the demo page."""
    return _asset_response(request, assets.PAGE_FILE)


async def static_file(request: Request) -> Response:
    """``GET /static/{name}``: one of the page's files, looked up by name in memory, never on disk."""
    return _asset_response(request, request.path_params["name"])


async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``: the public API, built from what the upstreams describe."""
    public: PublicDescription = request.state.openapi
    body, complete = await public.render()
    # A document missing an upstream is true only for now: nobody should keep it.
    headers = {} if complete else {"Cache-Control": "no-store"}
    return Response(body, media_type=OPENAPI_MEDIA_TYPE, headers=headers)


def _client_address(scope: Scope, state: Mapping[str, Any]) -> str:
    """The client as the gateway's own trusted proxies (an ingress) report it.

    Their claim is then stated afresh to the upstream, and any X-Forwarded-For the client wrote
    is dropped. With no trusted proxy, or no X-Forwarded-For, the client is the peer: no header
    is parsed and no address is read into an ``ipaddress`` object.
    """
    client = scope.get("client")
    peer: str = client[0] if client else ""
    trusted: tuple[ProxyNetwork, ...] = state["trusted_proxies"]
    if not trusted:
        return peer
    forwarded = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"]
    return client_ip(peer, forwarded, trusted) if forwarded else peer


async def forward(scope: Scope, receive: Receive) -> Response:
    """Verify the token the route requires, if any, read the body, then proxy to an origin of the route's
    upstream and return the answer to stream.

    A plain ASGI call rather than a Starlette endpoint: every request the gateway proxies comes
    through here, and a :class:`~starlette.requests.Request` is made only for what needs one (the
    token check, a body to read).
    """
    state: Mapping[str, Any] = scope["state"]
    # The raw path, not the decoded one: the upstream must get exactly the bytes the client sent.
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    resolver: domain.Resolver = state["resolver"]
    target = resolver.resolve(raw_path.decode("latin-1"))
    route = target.route
    tracing: Tracing = state["tracing"]
    name_route(scope, route.prefix)
    if route.audience is not None:
        verifiers: Mapping[str, TokenVerifier] = state["verifiers"]
        # Checked before the body is read, so an unauthenticated upload is refused unread.
        with tracing.span("verify token", {"auth.audience": route.audience}):
            await verifiers[route.audience].verify_request(Request(scope))

    request_target = domain.request_target(target, scope["query_string"])
    client_address = _client_address(scope, state).encode("latin-1")
    raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
    # The scope's scheme, not a URL: building and parsing one per request is measurable here.
    scheme = scope["scheme"].encode("ascii")

    def headers_for(upstream_host: bytes) -> list[tuple[bytes, bytes]]:
        headers = domain.upstream_request_headers(
            raw_headers, route, upstream_host=upstream_host, client_ip=client_address, scheme=scheme
        )
        # The upstream's server span becomes a child of the client span open around the exchange.
        tracing.inject(headers)
        return headers

    body = None
    if domain.has_body(raw_headers):
        body = await proxy.read_body(Request(scope, receive), within=state["request_body_timeout"])
    connections: Mapping[str, UpstreamPool] = state["connections"]
    pools: Mapping[str, Pool] = state["upstreams"]

    def response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return domain.client_response_headers(headers, route)

    exchange = proxy.exchange(
        receive,
        disconnect_future(scope),
        connections[route.upstream],
        pools[route.upstream],
        scope["method"],
        request_target,
        headers_for,
        body,
        retry_after=state["retry_after"],
        response_headers=response_headers,
        buffer_bytes=state["response_buffer_bytes"],
        send_timeout=state["client_send_timeout"],
        holds=route.holds,
    )
    return await tracing.http_call(scope["method"], route.upstream, exchange)


async def forward_auth_verdict(request: Request) -> Response:
    """``/forward-auth/{audience}[/...]``: a proxy's question about its client's token, answered to the
    proxies allowed to ask; to anyone else, what the route table answers for the path."""
    peer = request.client.host if request.client is not None else ""
    if not forward_auth.is_allowed_peer(peer, request.state.forward_auth_allowed_from):
        return await forward(request.scope, request.receive)
    audiences: frozenset[str] = request.state.forward_auth_audiences
    audience = request.path_params["audience"]
    verifiers: Mapping[str, TokenVerifier] = request.state.verifiers
    return await forward_auth.verdict(request, verifiers[audience] if audience in audiences else None)


# No OPTIONS: the route table approves no CORS preflight, which is what makes X-CSRF-Token work on
# /auth/*. Only the routes with an audience answer one, and only when CORS_ALLOWED_ORIGINS names an
# origin: services.gateway.cors answers it before routing, so it never gets here.
PROXIED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
FORWARD_AUTH_METHODS = (*PROXIED_METHODS, "OPTIONS")


class ProxyRoute(BaseRoute):
    """Every path the routes before it do not serve, in a proxied method, goes to :func:`forward`.

    Last in the list, it matches what the catch-all ``Route("/{path:path}")`` matched, and a
    method the gateway does not proxy is still a 405 naming the ones it does. Errors propagate to
    the app's exception handlers as from any endpoint; only the per-request wrapping of a
    Starlette endpoint (a ``Request``, a second layer of exception handling) is left out.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        return (Match.FULL if scope["method"] in PROXIED_METHODS else Match.PARTIAL), {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in PROXIED_METHODS:
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(PROXIED_METHODS)})
        response = await forward(scope, receive)
        await response(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)


ROUTES: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    # Exactly "/" and "/static/...": nothing the route table proxies is shadowed.
    Route("/", page, methods=["GET"]),
    Route(assets.STATIC_PREFIX + "{name:path}", static_file, methods=["GET"]),
    ProxyRoute(),
]

# Not the public API, so not in ROUTES nor in /openapi.json: mounted (ahead of ROUTES) only when
# FORWARD_AUTH_AUDIENCES names an audience, and answered only to the proxies allowed to ask.
FORWARD_AUTH_ROUTES: list[BaseRoute] = [
    # Any method: nginx and Envoy ask with the client's own (Envoy also appends its path).
    Route(forward_auth.PREFIX + "/{audience}", forward_auth_verdict, methods=FORWARD_AUTH_METHODS),
    Route(
        forward_auth.PREFIX + "/{audience}/{rest:path}", forward_auth_verdict, methods=FORWARD_AUTH_METHODS
    ),
]
