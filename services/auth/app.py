"""Composition root for auth: wires settings, Redis, keys and routes into one Starlette app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypedDict

from itsdangerous import Signer
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.requests import Request

from services.auth import domain
from services.auth.feed import RevocationFeed
from services.auth.key_store import KeyStore
from services.auth.metrics import KeyStoreMetrics, RevocationFeedMetrics
from services.auth.passwords import Passwords
from services.auth.redis_client import Client, connect
from services.auth.redis_health import RedisHealth, watched
from services.auth.routes import AuthContext, routes
from services.auth.service import Accounts, AuthService
from services.auth.settings import Settings
from services.auth.store import RevocationStore, SessionStore, ThrottleStore, UserStore
from services.auth.traced_redis import traced
from shared.core import ApiError, Conflict
from shared.web import Periodic, Tracing, build_app, cancel_and_wait, new_registry

logger = logging.getLogger(__name__)

DEMO_ACCOUNTS = (("alice@example.com", "user"), ("admin@example.com", "admin"))


class State(TypedDict):
    """What handlers find on ``request.state``."""

    auth: AuthContext
    # Dev only: the task creating the demo accounts, which readiness waits for.
    seeding: asyncio.Task[None] | None


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The auth application. Keys load and Redis connects when the lifespan starts."""
    registry = new_registry()
    tracing = Tracing(settings.tracing, "auth")
    reuses = Counter(
        "auth_refresh_reuse",
        "Rotated-away refresh handles presented again; each revoked its native session",
        registry=registry,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        async with contextlib.AsyncExitStack() as stack:
            keys = KeyStore(settings.keys_dir, settings.rotation, clock=clock)
            await stack.enter_async_context(_watch_keys(keys, settings.rotation.reload_interval))
            collector = KeyStoreMetrics(keys)
            registry.register(collector)
            stack.callback(registry.unregister, collector)
            health = RedisHealth()
            registry.register(health)
            stack.callback(registry.unregister, health)
            client = watched(
                traced(connect(settings.redis_url.value, settings.redis_timeout), tracing), health
            )
            stack.push_async_callback(client.aclose)
            feed = RevocationFeed(
                RevocationStore(client),
                keys,
                issuer=settings.issuer,
                poll_interval=settings.revocations_poll_interval,
                max_waiters=settings.revocations_max_waiters,
                clock=clock,
            )
            await stack.enter_async_context(feed)
            feed_metrics = RevocationFeedMetrics(feed)
            registry.register(feed_metrics)
            stack.callback(registry.unregister, feed_metrics)
            context = _wire(settings, keys, client, feed, clock, on_refresh_reuse=reuses.inc)
            seeding = None
            if settings.dev:
                accounts = context.service.accounts
                seeding = asyncio.create_task(_seed_demo_users(accounts, settings), name="demo-users")
                stack.push_async_callback(cancel_and_wait, seeding)
            logger.info("auth started with keys %s", keys.status()["keys"])
            yield {"auth": context, "seeding": seeding}

    async def readiness(request: Request) -> dict[str, Any]:
        service = request.state.auth.service
        try:
            redis_ok = await service.accounts.sessions.ping()
        except ApiError:
            redis_ok = False
        checks: dict[str, Any] = {
            "redis": redis_ok,
            "signing_keys": service.keys.status(),
            # Verifiers start by fetching the feed; a worker without one would answer 503.
            "revocations": request.state.auth.feed.ready,
        }
        seeding: asyncio.Task[None] | None = request.state.seeding
        if seeding is not None:
            # Dev only: "ready" must mean the documented demo logins work.
            checks["demo_users"] = seeding.done()
        return checks

    return build_app(
        routes, lifespan=lifespan, readiness=readiness, metrics=registry, edge=settings.edge, tracing=tracing
    )


def _wire(
    settings: Settings,
    keys: KeyStore,
    client: Client,
    feed: RevocationFeed,
    clock: Callable[[], float],
    *,
    on_refresh_reuse: Callable[[], None],
) -> AuthContext:
    """The stores, the use cases and the cookie signer over one Redis client."""
    policy = domain.SessionPolicy(
        idle=settings.session_idle_timeout,
        absolute=settings.session_absolute_timeout,
        per_user=settings.sessions_per_user,
    )
    accounts = Accounts(
        users=UserStore(client),
        sessions=SessionStore(client, policy),
        throttles=ThrottleStore(client),
        passwords=Passwords(),
        revocations=feed,
        token_ttl=settings.access_token_ttl,
        clock=clock,
    )
    return AuthContext(
        settings=settings,
        service=AuthService(
            accounts=accounts, settings=settings, keys=keys, on_refresh_reuse=on_refresh_reuse
        ),
        cookie_signer=Signer(settings.session_secret.value, salt="session-cookie"),
        feed=feed,
    )


def _watch_keys(keys: KeyStore, interval: float) -> Periodic:
    """Pick up rotations without a restart: look for changed key files every ``interval`` s."""

    async def reload() -> None:
        # Off the event loop: parsing a few PEM files takes milliseconds.
        await asyncio.to_thread(keys.reload_if_changed)

    return Periodic(reload, interval, name="key-directory-watch")


async def _seed_demo_users(accounts: Accounts, settings: Settings) -> None:
    """Dev only: create the documented demo accounts, retrying until Redis answers."""
    password = settings.demo_password
    if password is None:
        return
    while True:
        try:
            for email, role in DEMO_ACCOUNTS:
                if await accounts.users.by_email(email) is None:
                    with contextlib.suppress(Conflict):  # another worker created it first
                        password_hash = await accounts.passwords.hash(password.value)
                        await accounts.users.create(email, role, password_hash)
                        logger.info("created demo user %s (%s)", email, role)
            return
        except ApiError:
            await asyncio.sleep(1.0)


def app_from_env() -> Starlette:
    """The uvicorn factory: settings from the process environment."""
    return create_app(Settings.from_env(os.environ))
