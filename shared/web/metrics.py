"""Prometheus metrics: one registry per app, served as text at ``GET /metrics``.

Each app owns its registry (never prometheus-client's global one), so several apps in one
process, as in the tests, do not collide. Values are read from the objects that own them at
scrape time (custom collectors), so no code path has to remember to update a metric.
With ``<NAME>_WORKERS`` above 1 each uvicorn worker has its own registry and a scrape sees the
worker that answered: run one worker per container and scale with replicas when you need
exact counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.web.verifier import TokenVerifier


def new_registry() -> CollectorRegistry:
    """A registry with the process and platform metrics, for one app."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def metrics_route(registry: CollectorRegistry) -> Route:
    """``GET /metrics`` in the Prometheus text format."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return Route("/metrics", metrics, methods=["GET"])


class VerifierMetrics(Collector):
    """The token verifiers' and their JWKS caches' state, labelled by audience."""

    def __init__(self, verifiers: Mapping[str, TokenVerifier]):
        self._verifiers = dict(verifiers)

    def collect(self) -> Iterable[Metric]:
        age = GaugeMetricFamily(
            "jwks_age_seconds", "Seconds since the last successful JWKS fetch", labels=["audience"]
        )
        keys = GaugeMetricFamily("jwks_keys", "Public keys in the JWKS cache", labels=["audience"])
        ready = GaugeMetricFamily(
            "jwks_ready", "1 while the cache holds keys younger than the stale bound", labels=["audience"]
        )
        last_ok = GaugeMetricFamily(
            "jwks_last_fetch_success",
            "1 if the last JWKS fetch succeeded, 0 if it failed",
            labels=["audience"],
        )
        fetches = CounterMetricFamily("jwks_fetches", "JWKS fetches by result", labels=["audience", "result"])
        refetches = CounterMetricFamily(
            "jwks_unknown_kid_refetches",
            "JWKS fetches caused by a token with an unknown kid",
            labels=["audience"],
        )
        verified = CounterMetricFamily("tokens_verified", "Access tokens accepted", labels=["audience"])
        rejected = CounterMetricFamily(
            "tokens_rejected", "Access tokens refused (401) by reason", labels=["audience", "reason"]
        )
        remembered = CounterMetricFamily(
            "tokens_verified_from_cache",
            "Accepted tokens that were already verified (no signature check)",
            labels=["audience"],
        )
        unavailable = CounterMetricFamily(
            "tokens_unverifiable", "Requests answered 503 because no keys could be had", labels=["audience"]
        )
        for audience, verifier in sorted(self._verifiers.items()):
            cache = verifier.keys
            if cache.age is not None:
                age.add_metric([audience], cache.age)
            keys.add_metric([audience], cache.key_count)
            ready.add_metric([audience], 1.0 if cache.ready else 0.0)
            if cache.last_fetch_ok is not None:
                last_ok.add_metric([audience], 1.0 if cache.last_fetch_ok else 0.0)
            fetches.add_metric([audience, "success"], cache.success_count)
            fetches.add_metric([audience, "failure"], cache.failure_count)
            refetches.add_metric([audience], cache.refetch_count)
            verified.add_metric([audience], verifier.verified_count)
            remembered.add_metric([audience], verifier.cache_hits)
            for reason, count in sorted(verifier.rejected.items()):
                rejected.add_metric([audience, reason], count)
            unavailable.add_metric([audience], verifier.unavailable_count)
        yield from (
            age,
            keys,
            ready,
            last_ok,
            fetches,
            refetches,
            verified,
            remembered,
            rejected,
            unavailable,
        )
