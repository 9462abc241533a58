"""Gateway wiring: the lifespan opens the token verifiers, the upstream pools and the health checks."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request

from services.gateway import balancer, cors, domain, health, proxy, routes
from services.gateway.assets import PAGE_FILE, Asset, asset
from services.gateway.descriptions import PublicDescription, open_public_description
from services.gateway.metrics import UpstreamMetrics
from services.gateway.settings import GatewaySettings
from services.gateway.upstream import UpstreamPool
from shared.core import ProxyNetwork
from shared.web import TokenVerifier, Tracing, VerifierMetrics, build_app, new_registry, open_verifier

STATIC_DIR = Path(__file__).resolve().parent / "static"


class GatewayState(TypedDict):
    """What handlers find on ``request.state``."""

    assets: Mapping[str, Asset]
    client_send_timeout: float
    connections: dict[str, UpstreamPool]
    openapi: PublicDescription
    request_body_timeout: float
    response_buffer_bytes: int
    retry_after: int
    tracing: Tracing
    resolver: domain.Resolver
    forward_auth_audiences: frozenset[str]
    forward_auth_allowed_from: tuple[ProxyNetwork, ...]
    trusted_proxies: tuple[ProxyNetwork, ...]
    upstreams: dict[str, balancer.Pool]
    verifiers: dict[str, TokenVerifier]


def load_assets(directory: Path) -> dict[str, Asset]:
    """The demo page's files by name, read once; a missing page or an unknown file type fails start-up."""
    assets = {
        path.name: asset(path.name, path.read_bytes())
        for path in sorted(directory.iterdir())
        if path.is_file() and not path.name.startswith(".")
    }
    if PAGE_FILE not in assets:
        raise ValueError(f"{directory} has no {PAGE_FILE}")
    return assets


def create_app(settings: GatewaySettings) -> Starlette:
    """The gateway: the demo page, one verifier per audience the routes and forward-auth name, and per
    upstream name a connection pool of its own and a balanced set of origins with its health checks."""
    assets = load_assets(STATIC_DIR)
    urls = settings.upstream_urls()
    unknown = sorted({route.upstream for route in settings.routes} - set(urls))
    if unknown:
        raise ValueError(f"the route table names upstreams without a URL: {', '.join(unknown)}")
    registry = new_registry()
    # The public edge starts every trace itself: a client's traceparent would choose its trace id
    # and could force sampling.
    tracing = Tracing(settings.tracing, "gateway", continue_traces=False)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[GatewayState]:
        async with AsyncExitStack() as stack:
            verifiers = {
                audience: await stack.enter_async_context(open_verifier(settings.verifier, audience))
                for audience in settings.audiences()
            }
            connections = await stack.enter_async_context(proxy.open_pools(settings))
            # Built per lifespan, so a restarted app starts with every origin in rotation.
            pools = balancer.pools(urls)
            interval = settings.upstream_health_interval
            await stack.enter_async_context(health.watching(pools.values(), interval))
            public_description = await stack.enter_async_context(open_public_description(settings, pools))
            for collector in (VerifierMetrics(verifiers), UpstreamMetrics(pools, connections)):
                registry.register(collector)
                stack.callback(registry.unregister, collector)
            yield {
                "assets": assets,
                "client_send_timeout": settings.client_send_timeout,
                "connections": connections,
                "openapi": public_description,
                "request_body_timeout": settings.request_body_timeout,
                "response_buffer_bytes": settings.response_buffer_bytes,
                # An origin marked down can be back once the next health check passes.
                "retry_after": math.ceil(interval),
                "tracing": tracing,
                "resolver": domain.Resolver(settings.routes),
                "forward_auth_audiences": frozenset(settings.forward_auth_audiences),
                "forward_auth_allowed_from": settings.forward_auth_allowed_from,
                "trusted_proxies": settings.trusted_proxies,
                "upstreams": pools,
                "verifiers": verifiers,
            }

    async def readiness(request: Request) -> dict[str, Any]:
        verifiers: dict[str, TokenVerifier] = request.state.verifiers
        pools: dict[str, balancer.Pool] = request.state.upstreams
        return {
            "jwks": {
                "ready": all(verifier.ready for verifier in verifiers.values()),
                "audiences": {audience: verifier.status() for audience, verifier in verifiers.items()},
            },
            "revocations": {
                "ready": all(
                    verifier.revocations is None or verifier.revocations.ready
                    for verifier in verifiers.values()
                ),
                "audiences": {
                    audience: verifier.revocations.status()
                    for audience, verifier in verifiers.items()
                    if verifier.revocations is not None
                },
            },
            # Reported, never a reason to leave rotation: a gateway that went unready whenever auth
            # is down would also take down the routes whose upstreams are fine (and the answers
            # that say auth is down).
            "upstreams": {"ready": True, **{name: pool.status() for name, pool in pools.items()}},
        }

    mounted = (
        [*routes.FORWARD_AUTH_ROUTES, *routes.ROUTES] if settings.forward_auth_audiences else routes.ROUTES
    )
    return build_app(
        mounted,
        middleware=cors_middleware(settings),
        lifespan=lifespan,
        readiness=readiness,
        metrics=registry,
        max_body_bytes=settings.max_body_bytes,
        edge=settings.edge,
        tracing=tracing,
    )


def cors_middleware(settings: GatewaySettings) -> list[Middleware]:
    """CORS for the routes with an audience, when ``CORS_ALLOWED_ORIGINS`` names an origin; else nothing."""
    if not settings.cors_allowed_origins:
        return []
    policy = cors.CorsPolicy(
        settings.cors_allowed_origins, methods=routes.PROXIED_METHODS, max_age=settings.cors_max_age
    )
    prefixes = [route.prefix for route in settings.routes if route.audience is not None]
    return [Middleware(cors.CorsMiddleware, policy=policy, prefixes=prefixes)]


def app_from_env() -> Starlette:
    """The uvicorn factory: settings from the process environment."""
    return create_app(GatewaySettings.from_env(os.environ))
