"""Requests by method, route template and status, and their latency, recorded into plain dicts.

The request path pays about a dict lookup and a bisect per request; the Prometheus families are
built only when ``/metrics`` is scraped. A prometheus-client ``Counter.labels(...)`` lookup per
request would cost several times more, on the path the benchmarks compare with a bare ``/healthz``.

Labels stay bounded whatever a client sends: the route is the matched template
(``/orders/{order_id}``) or the name a handler gave it (the gateway's route-table prefix), never the
path itself; a request that matched no route is :data:`UNMATCHED`; a method outside
:data:`METHODS` is ``OTHER``; and past :data:`MAX_ROUTES` distinct routes, more go to
:data:`OVERFLOW`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import Scope

from shared.web.tracing import ROUTE_KEY

#: Upper bounds (seconds) of the latency buckets: fine below a millisecond, where a verified
#: request answers, and up to the seconds a slow upstream or Redis can take.
DEFAULT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
UNMATCHED = "unmatched"
OVERFLOW = "other"
#: More distinct routes than an app declares; a bound for apps that name routes themselves.
MAX_ROUTES = 200


class _Latency:
    """One histogram: a count per bucket (the last is +Inf) and the sum of the observations."""

    __slots__ = ("buckets", "total")

    def __init__(self, size: int):
        self.buckets = [0] * size
        self.total = 0.0


class _Series:
    """The request count of one (method, route, status) and the histogram of its (method, route)."""

    __slots__ = ("count", "latency")

    def __init__(self, latency: _Latency):
        self.count = 0
        self.latency = latency


class RequestMetrics(Collector):
    """Counts and times every request an app answers; a collector that serves them at scrape time.

    ``http_requests_total{method, route, status}`` and
    ``http_request_duration_seconds{method, route}``. With several uvicorn workers each has its
    own, like every other metric here.
    """

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS):
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be distinct and increasing")
        self._bounds = tuple(float(bound) for bound in buckets)
        self._series: dict[tuple[str, str, int], _Series] = {}
        self._latencies: dict[tuple[str, str], _Latency] = {}
        self._routes: set[str] = set()

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        """Count one answered request of ``scope`` with ``status`` that took ``seconds``."""
        route = scope.get(ROUTE_KEY) or getattr(scope.get("route"), "path", None) or UNMATCHED
        key = (scope["method"], route, status)
        series = self._series.get(key)
        if series is None:
            series = self._admit(key)
        series.count += 1
        latency = series.latency
        latency.buckets[bisect_left(self._bounds, seconds)] += 1
        latency.total += seconds

    def _admit(self, key: tuple[str, str, int]) -> _Series:
        # Only the first request of a series comes here, and every request with an odd method,
        # which is never stored under its own name.
        method, route, status = key
        if method not in METHODS:
            method = OTHER_METHOD
        if not isinstance(route, str):
            route = UNMATCHED
        if route not in self._routes:
            if len(self._routes) >= MAX_ROUTES:
                route = OVERFLOW
            self._routes.add(route)
        latencies = self._latencies
        bounded = (method, route, status)
        series = self._series.get(bounded)
        if series is None:
            latency = latencies.get((method, route))
            if latency is None:
                latency = latencies[(method, route)] = _Latency(len(self._bounds) + 1)
            series = self._series[bounded] = _Series(latency)
        return series

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            labels=["method", "route", "status"],
        )
        for (method, route, status), series in sorted(self._series.items()):
            requests.add_metric([method, route, str(status)], series.count)
        durations = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Time from a request's arrival in the app to its answer, by method and route template",
            labels=["method", "route"],
        )
        bounds = [*(f"{bound:g}" for bound in self._bounds), "+Inf"]
        for (method, route), latency in sorted(self._latencies.items()):
            cumulative = 0
            buckets = []
            for bound, count in zip(bounds, latency.buckets, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            durations.add_metric([method, route], buckets, latency.total)
        yield from (requests, durations)
