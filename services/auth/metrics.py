"""Auth's own metrics: tokens signed and the key directory's state, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from services.auth.key_schedule import KeyState
from services.auth.key_store import KeyStore


class KeyStoreMetrics(Collector):
    """Signing and reloading, and how many keys are in each lifecycle state."""

    def __init__(self, store: KeyStore):
        self._store = store

    def collect(self) -> Iterable[Metric]:
        store = self._store
        signed = CounterMetricFamily("auth_tokens_signed", "Access tokens signed")
        signed.add_metric([], store.tokens_signed)
        reloads = CounterMetricFamily(
            "auth_key_reloads", "Reloads of the key directory by result", labels=["result"]
        )
        reloads.add_metric(["success"], store.reloads)
        reloads.add_metric(["failure"], store.reload_failures)
        healthy = GaugeMetricFamily(
            "auth_key_directory_ok", "0 while the last reload failed and the last good keys are in use"
        )
        healthy.add_metric([], 0.0 if store.last_error else 1.0)
        states = GaugeMetricFamily("auth_keys", "Signing keys by lifecycle state", labels=["state"])
        counts = dict.fromkeys(KeyState, 0)
        for state in store.states().values():
            counts[state] += 1
        for state, count in counts.items():
            states.add_metric([str(state)], count)
        yield from (signed, reloads, healthy, states)
