"""The gateway's own metrics: each upstream origin's health and each pool's use, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from services.gateway.balancer import Pool
from services.gateway.upstream import UpstreamPool


class UpstreamMetrics(Collector):
    """Which origins are in rotation, how often each was taken out, and how often requests moved."""

    def __init__(self, pools: Mapping[str, Pool], connections: Mapping[str, UpstreamPool] | None = None):
        self._pools = dict(pools)
        self._connections = dict(connections or {})

    def collect(self) -> Iterable[Metric]:
        healthy = GaugeMetricFamily(
            "gateway_upstream_healthy",
            "1 while the origin is in rotation, 0 while it is marked down",
            labels=["upstream", "url"],
        )
        marked_down = CounterMetricFamily(
            "gateway_upstream_marked_down",
            "Times the origin was taken out of rotation, by cause",
            labels=["upstream", "url", "cause"],
        )
        retries = CounterMetricFamily(
            "gateway_upstream_retries",
            "Requests sent to a second origin after the first failed, by cause",
            labels=["upstream", "cause"],
        )
        for name, pool in sorted(self._pools.items()):
            for member in pool.members:
                healthy.add_metric([name, member.url], 1.0 if member.healthy else 0.0)
                for cause in ("connect", "health_check"):
                    marked_down.add_metric([name, member.url, cause], member.marked_down.get(cause, 0))
            for cause in ("connect", "after_send"):
                retries.add_metric([name, cause], pool.retries.get(cause, 0))
        yield from (healthy, marked_down, retries)
        yield from self._connection_metrics()

    def _connection_metrics(self) -> Iterable[Metric]:
        connections = GaugeMetricFamily(
            "gateway_upstream_connections",
            "Connections of the upstream's pool: in_use for an exchange, or idle and kept for reuse",
            labels=["upstream", "state"],
        )
        limit = GaugeMetricFamily(
            "gateway_upstream_connections_limit", "The size of the upstream's pool", labels=["upstream"]
        )
        exhausted = CounterMetricFamily(
            "gateway_upstream_pool_exhausted",
            "Requests refused 503 upstream_busy: no connection came free within the pool timeout",
            labels=["upstream"],
        )
        send_timeouts = CounterMetricFamily(
            "gateway_client_send_timeouts",
            "Streamed answers abandoned because the client did not read them in time",
            labels=["upstream"],
        )
        abandoned = CounterMetricFamily(
            "gateway_upstream_abandoned",
            "Exchanges stopped because the client disconnected before its answer was sent",
            labels=["upstream"],
        )
        for name, pool in sorted(self._connections.items()):
            connections.add_metric([name, "in_use"], pool.in_use)
            connections.add_metric([name, "idle"], pool.idle)
            limit.add_metric([name], pool.limits.max_connections)
            exhausted.add_metric([name], pool.exhausted)
            send_timeouts.add_metric([name], pool.client_send_timeouts)
            abandoned.add_metric([name], pool.abandoned)
        yield from (connections, limit, exhausted, send_timeouts, abandoned)
