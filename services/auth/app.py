"""Composition root for auth: wires settings, Redis, keys and routes into one Starlette app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from itsdangerous import Signer
from starlette.applications import Starlette
from starlette.requests import Request

from services.auth import domain
from services.auth.keys import KeyStore
from services.auth.metrics import KeyStoreMetrics
from services.auth.passwords import Passwords
from services.auth.redis_client import connect
from services.auth.routes import AuthContext, routes
from services.auth.settings import Settings
from services.auth.store import SessionStore, ThrottleStore, UserStore
from shared import ApiError, Conflict, build_app, new_registry

logger = logging.getLogger(__name__)

DEMO_ACCOUNTS = (("alice@example.com", "user"), ("admin@example.com", "admin"))


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The auth application. Keys load and Redis connects when the lifespan starts."""
    registry = new_registry()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        keys = KeyStore(settings.keys_dir, settings.rotation, clock=clock)
        watching = asyncio.create_task(_watch_keys(keys, settings.rotation.reload_interval))
        collector = KeyStoreMetrics(keys)
        registry.register(collector)
        client = connect(settings.redis_url.value, settings.redis_timeout)
        policy = domain.SessionPolicy(
            idle=settings.session_idle_timeout, absolute=settings.session_absolute_timeout
        )
        context = AuthContext(
            settings=settings,
            users=UserStore(client),
            sessions=SessionStore(client, policy),
            passwords=Passwords(),
            keys=keys,
            cookie_signer=Signer(settings.session_secret.value, salt="session-cookie"),
            throttles=ThrottleStore(client),
            clock=clock,
        )
        seeding = asyncio.create_task(_seed_demo_users(context)) if settings.dev else None
        logger.info("auth started with keys %s", keys.status()["keys"])
        try:
            yield {"auth": context, "seeding": seeding}
        finally:
            if seeding is not None:
                seeding.cancel()
            watching.cancel()
            registry.unregister(collector)
            await client.aclose()

    async def readiness(request: Request) -> dict[str, Any]:
        context: AuthContext = request.state.auth
        try:
            redis_ok = await context.sessions.ping()
        except ApiError:
            redis_ok = False
        checks: dict[str, Any] = {
            "redis": redis_ok,
            "signing_keys": context.keys.status(),
        }
        seeding: asyncio.Task[None] | None = request.state.seeding
        if seeding is not None:
            # Dev only: "ready" must mean the documented demo logins work.
            checks["demo_users"] = seeding.done()
        return checks

    return build_app(routes, lifespan=lifespan, readiness=readiness, metrics=registry, edge=settings.edge)


async def _watch_keys(keys: KeyStore, interval: float) -> None:
    """Pick up rotations without a restart: look for changed key files every ``interval`` s."""
    while True:
        await asyncio.sleep(interval)
        try:
            # Off the event loop: parsing a few PEM files takes milliseconds.
            await asyncio.to_thread(keys.reload_if_changed)
        except Exception:
            # The watch must outlive any surprise, or a rotation would go unnoticed.
            logger.exception("watching the key directory failed unexpectedly")


async def _seed_demo_users(context: AuthContext) -> None:
    """Dev only: create the documented demo accounts, retrying until Redis answers."""
    password = context.settings.demo_password
    if password is None:
        return
    while True:
        try:
            for email, role in DEMO_ACCOUNTS:
                if await context.users.by_email(email) is None:
                    with contextlib.suppress(Conflict):  # another worker created it first
                        await context.users.create(email, role, await context.passwords.hash(password.value))
                        logger.info("created demo user %s (%s)", email, role)
            return
        except ApiError:
            await asyncio.sleep(1.0)


def app_from_env() -> Starlette:
    """The uvicorn factory: settings from the process environment."""
    return create_app(Settings.from_env(os.environ))
