"""Active health checks: every origin's ``/readyz``, on a schedule, feeding the balancer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

import httpx

from services.gateway.balancer import Member, Pool, every_member
from shared.web import Periodic

logger = logging.getLogger(__name__)

READY_PATH = "/readyz"
# A check gets the interval to answer, but never less than this: a loaded machine must not
# make a healthy origin look dead when the interval is short.
MIN_CHECK_TIMEOUT_SECONDS = 1.0


def open_health_client(interval: float, origins: int) -> httpx.AsyncClient:
    """A client of its own, so that checks never wait behind traffic for a pooled connection.

    A check slower than the interval (or :data:`MIN_CHECK_TIMEOUT_SECONDS`) counts as failed: an
    origin that cannot answer its probe in that time is not one to send users to.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(max(interval, MIN_CHECK_TIMEOUT_SECONDS)),
        limits=httpx.Limits(max_connections=origins, max_keepalive_connections=origins),
        follow_redirects=False,
        trust_env=False,
    )


async def check(client: httpx.AsyncClient, pool: Pool, member: Member) -> None:
    """Probe one origin and record the outcome; a change of state is logged."""
    try:
        response = await client.get(member.url + READY_PATH)
    except httpx.HTTPError as exc:
        reason = f"health check failed: {type(exc).__name__}"
    else:
        if response.status_code == 200:
            if pool.mark_up(member.url):
                logger.info("upstream %s %s is healthy again", pool.name, member.url)
            return
        reason = f"health check answered HTTP {response.status_code}"
    if pool.mark_down(member.url, "health_check", reason):
        logger.warning("upstream %s %s marked down: %s", pool.name, member.url, reason)


async def check_all(client: httpx.AsyncClient, pools: Iterable[Pool]) -> None:
    """One round: every origin of every pool, concurrently."""
    await asyncio.gather(*(check(client, pool, member) for pool, member in every_member(pools)))


@contextlib.asynccontextmanager
async def watching(pools: Iterable[Pool], interval: float) -> AsyncIterator[None]:
    """Check every origin every ``interval`` seconds while the block runs (the gateway's lifespan)."""
    every = list(pools)
    origins = sum(len(pool.members) for pool in every)
    async with (
        open_health_client(interval, origins) as client,
        Periodic(lambda: check_all(client, every), interval, name="upstream-health", immediately=True),
    ):
        yield
