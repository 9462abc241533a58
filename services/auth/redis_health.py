"""Whether auth's Redis answers, as its own commands find out: a gauge and an error count at scrape time.

Every command and pipeline auth sends (the request path's, and the readiness probe's ``PING``)
passes through :func:`watched`, which notes how it ended. So the gauge is as fresh as the last
request or probe, and nothing pings Redis just to feed a metric.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from redis.exceptions import NoScriptError

from services.auth.redis_client import REDIS_ERRORS, Client, around_sends


class RedisHealth(Collector):
    """How auth's last Redis command ended, and how many failed; a collector serving both."""

    def __init__(self) -> None:
        self.last_ok: bool | None = None
        self.errors = 0

    def succeeded(self) -> None:
        self.last_ok = True

    def failed(self) -> None:
        self.last_ok = False
        self.errors += 1

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "auth_redis_up", "1 if auth's last Redis command or readiness ping succeeded, 0 if it failed"
        )
        if self.last_ok is not None:
            up.add_metric([], 1.0 if self.last_ok else 0.0)
        errors = CounterMetricFamily("auth_redis_errors", "Redis commands and pipelines that failed")
        errors.add_metric([], self.errors)
        yield from (up, errors)


def watched(client: Client, health: RedisHealth) -> Client:
    """``client`` with the outcome of each of its commands and pipelines noted in ``health``."""
    return around_sends(client, lambda send, name: _watched(send, health))


def _watched(execute: Callable[..., Awaitable[Any]], health: RedisHealth) -> Callable[..., Awaitable[Any]]:
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await execute(*args, **kwargs)
        except NoScriptError:
            # Redis answered; redis-py loads the script and runs it again.
            health.succeeded()
            raise
        except REDIS_ERRORS:
            health.failed()
            raise
        health.succeeded()
        return result

    return run
