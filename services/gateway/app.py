"""Gateway wiring: the lifespan opens the token verifiers and the upstream client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypedDict

import httpx
from starlette.applications import Starlette
from starlette.requests import Request

from services.gateway import domain, proxy, routes
from services.gateway.settings import GatewaySettings
from shared import TokenVerifier, VerifierMetrics, build_app, new_registry, open_verifier


class GatewayState(TypedDict):
    """What handlers find on ``request.state``."""

    client: httpx.AsyncClient
    request_body_timeout: float
    upstreams: dict[str, httpx.URL]
    verifiers: dict[str, TokenVerifier]


def create_app(settings: GatewaySettings) -> Starlette:
    """The gateway: one verifier per audience the route table names, one pooled upstream client."""
    urls = settings.upstream_urls()
    unknown = sorted({route.upstream for route in domain.ROUTE_TABLE} - set(urls))
    if unknown:
        raise ValueError(f"the route table names upstreams without a URL: {', '.join(unknown)}")
    upstreams = {name: httpx.URL(url) for name, url in urls.items()}
    registry = new_registry()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[GatewayState]:
        async with AsyncExitStack() as stack:
            verifiers = {
                audience: await stack.enter_async_context(open_verifier(settings.verifier, audience))
                for audience in domain.audiences(domain.ROUTE_TABLE)
            }
            client = await stack.enter_async_context(proxy.open_client(settings))
            collector = VerifierMetrics(verifiers)
            registry.register(collector)
            stack.callback(registry.unregister, collector)
            yield {
                "client": client,
                "request_body_timeout": settings.request_body_timeout,
                "upstreams": upstreams,
                "verifiers": verifiers,
            }

    async def readiness(request: Request) -> dict[str, Any]:
        verifiers: dict[str, TokenVerifier] = request.state.verifiers
        return {
            "jwks": {
                "ready": all(verifier.ready for verifier in verifiers.values()),
                "audiences": {audience: verifier.status() for audience, verifier in verifiers.items()},
            }
        }

    return build_app(
        routes.ROUTES,
        lifespan=lifespan,
        readiness=readiness,
        metrics=registry,
        max_body_bytes=settings.max_body_bytes,
    )


def app_from_env() -> Starlette:
    """The uvicorn factory: settings from the process environment."""
    return create_app(GatewaySettings.from_env(os.environ))
