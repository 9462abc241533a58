"""Wiring for the orders service: the lifespan opens the database and the token verifier."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

from starlette.applications import Starlette
from starlette.requests import Request

from services.orders.domain import AUDIENCE
from services.orders.ratelimit import RateLimiter
from services.orders.routes import routes
from services.orders.settings import OrdersSettings
from services.orders.store import OrderStore, open_order_store
from shared.web import TokenVerifier, VerifierMetrics, build_app, new_registry, open_verifier

# An order body is a few hundred bytes; nothing legitimate comes near this.
MAX_BODY_BYTES = 16 * 1024


class State(TypedDict):
    """What handlers find on ``request.state``."""

    verifier: TokenVerifier
    store: OrderStore
    creation_limiter: RateLimiter
    max_orders_per_user: int


async def _readiness(request: Request) -> dict[str, Any]:
    verifier: TokenVerifier = request.state.verifier
    store: OrderStore = request.state.store
    revocations = verifier.revocations
    return {
        "jwks": verifier.status(),
        "revocations": {"ready": True} if revocations is None else revocations.status(),
        "database": store.ping(),
    }


def create_app(settings: OrdersSettings) -> Starlette:
    """The orders app for ``settings``; nothing is opened until its lifespan starts."""

    registry = new_registry()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        async with (
            open_order_store(settings.db_path) as store,
            open_verifier(settings.verifier, AUDIENCE) as verifier,
        ):
            collector = VerifierMetrics({AUDIENCE: verifier})
            registry.register(collector)
            try:
                yield {
                    "verifier": verifier,
                    "store": store,
                    "creation_limiter": RateLimiter(settings.create_rate, settings.create_burst),
                    "max_orders_per_user": settings.max_orders_per_user,
                }
            finally:
                registry.unregister(collector)

    return build_app(
        routes,
        lifespan=lifespan,
        readiness=_readiness,
        metrics=registry,
        max_body_bytes=MAX_BODY_BYTES,
        edge=settings.edge,
    )


def app_from_env() -> Starlette:
    """The uvicorn factory: settings from the process environment."""
    return create_app(OrdersSettings.from_env(os.environ))
