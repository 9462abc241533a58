"""HTTP mapping: the demo page and its files, then every other path through the route table."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.gateway import assets, domain, proxy
from services.gateway.balancer import Pool
from services.gateway.descriptions import PublicDescription
from services.gateway.upstream import UpstreamPool
from shared.core import NotFound, client_ip
from shared.web import TokenVerifier
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


async def forward(request: Request) -> Response:
    """Verify the token the route requires, if any, read the body, then proxy to an origin of the route's
    upstream and stream the answer."""
    # The raw path, not the decoded one: the upstream must get exactly the bytes the client sent.
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    target = domain.resolve(raw_path.decode("latin-1"))
    route = target.route
    if route.audience is not None:
        verifiers: Mapping[str, TokenVerifier] = request.state.verifiers
        # Checked before the body is read, so an unauthenticated upload is refused unread.
        await verifiers[route.audience].verify_request(request)

    request_target = domain.request_target(target, request.scope["query_string"])
    # The client as the gateway's own trusted proxies (an ingress) report it; their claim is then
    # stated afresh to the upstream, and any X-Forwarded-For the client wrote is dropped.
    peer = request.client.host if request.client is not None else ""
    client_address = client_ip(
        peer, request.headers.getlist("x-forwarded-for"), request.state.trusted_proxies
    )

    def headers_for(upstream_host: bytes) -> list[tuple[bytes, bytes]]:
        return domain.upstream_request_headers(
            request.headers.raw,
            route,
            upstream_host=upstream_host,
            client_ip=client_address.encode("latin-1"),
            # The scope's scheme, not request.url: that builds and parses the whole URL per request.
            scheme=request.scope["scheme"].encode("ascii"),
        )

    body = None
    if domain.has_body(request.headers.raw):
        body = await proxy.read_body(request, within=request.state.request_body_timeout)
    connections: Mapping[str, UpstreamPool] = request.state.connections
    pools: Mapping[str, Pool] = request.state.upstreams

    def response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return domain.client_response_headers(headers, route)

    return await proxy.exchange(
        request.receive,
        connections[route.upstream],
        pools[route.upstream],
        request.method,
        request_target,
        headers_for,
        body,
        retry_after=request.state.retry_after,
        response_headers=response_headers,
        buffer_bytes=request.state.response_buffer_bytes,
        send_timeout=request.state.client_send_timeout,
        holds=route.holds,
    )


# No OPTIONS: the gateway never approves a CORS preflight, which is what makes X-CSRF-Token work.
PROXIED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

ROUTES: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    # Exactly "/" and "/static/...": nothing the route table proxies is shadowed.
    Route("/", page, methods=["GET"]),
    Route(assets.STATIC_PREFIX + "{name:path}", static_file, methods=["GET"]),
    Route("/{path:path}", forward, methods=PROXIED_METHODS),
]
