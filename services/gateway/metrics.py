"""The gateway's own metrics: the health of each upstream origin, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from services.gateway.balancer import Pool


class UpstreamMetrics(Collector):
    """Which origins are in rotation, how often each was taken out, and how often requests moved."""

    def __init__(self, pools: Mapping[str, Pool]):
        self._pools = dict(pools)

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
