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
    """The token verifiers', their JWKS caches' and revocation feeds' state, labelled by audience.

    Tokens refused because a revocation covers them are ``tokens_rejected{reason="revoked"}``;
    the 503s of a stale feed under the fail-closed policy are counted in ``tokens_unverifiable``.
    """

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
        feed_age = GaugeMetricFamily(
            "revocations_age_seconds",
            "Seconds since the revocation feed last answered successfully (or since start before that)",
            labels=["audience"],
        )
        feed_entries = GaugeMetricFamily(
            "revocations_entries", "Live revocation entries held", labels=["audience"]
        )
        feed_version = GaugeMetricFamily(
            "revocations_version", "Version of the revocation feed held", labels=["audience"]
        )
        feed_ready = GaugeMetricFamily(
            "revocations_ready",
            "1 while the revocation feed is younger than its stale bound",
            labels=["audience"],
        )
        feed_fetches = CounterMetricFamily(
            "revocations_fetches", "Revocation feed answers by result", labels=["audience", "result"]
        )
        feed_failures = CounterMetricFamily(
            "revocations_refresh_failures",
            "Failed revocation feed refreshes by reason",
            labels=["audience", "reason"],
        )
        for audience, verifier in sorted(self._verifiers.items()):
            feed = verifier.revocations
            if feed is not None:
                feed_age.add_metric([audience], feed.age)
                feed_entries.add_metric([audience], feed.entry_count)
                if feed.version is not None:
                    feed_version.add_metric([audience], feed.version)
                feed_ready.add_metric([audience], 1.0 if feed.ready else 0.0)
                feed_fetches.add_metric([audience, "changed"], feed.changed_count)
                feed_fetches.add_metric([audience, "unchanged"], feed.unchanged_count)
                feed_fetches.add_metric([audience, "failure"], sum(feed.failures.values()))
                for reason, count in sorted(feed.failures.items()):
                    feed_failures.add_metric([audience, reason], count)
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
            feed_age,
            feed_entries,
            feed_version,
            feed_ready,
            feed_fetches,
            feed_failures,
        )
