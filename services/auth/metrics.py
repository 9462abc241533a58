"""Auth's own metrics: tokens signed, the key directory, the revocation feed; read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from services.auth.feed import RevocationFeed
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


class RevocationFeedMetrics(Collector):
    """The revocation feed of this worker: its size, its long-polls, and what it had to restore."""

    def __init__(self, feed: RevocationFeed):
        self._feed = feed

    def collect(self) -> Iterable[Metric]:
        feed = self._feed
        published = feed.published
        entries = GaugeMetricFamily("auth_revocation_entries", "Live entries in the revocation feed")
        entries.add_metric([], len(published.entries) if published else 0)
        version = GaugeMetricFamily("auth_revocation_version", "Version of the published revocation feed")
        version.add_metric([], published.version if published else 0)
        waiters = GaugeMetricFamily("auth_revocation_waiters", "Long-polls of the revocation feed held now")
        waiters.add_metric([], feed.waiters)
        declined = CounterMetricFamily(
            "auth_revocation_waits_declined", "Long-polls answered at once because the bound was reached"
        )
        declined.add_metric([], feed.waits_declined)
        signed = CounterMetricFamily("auth_revocation_feeds_signed", "Feeds signed (once per version)")
        signed.add_metric([], feed.signed)
        failures = CounterMetricFamily("auth_revocation_poll_failures", "Failed reads of the revocation set")
        failures.add_metric([], feed.poll_failures)
        republished = CounterMetricFamily(
            "auth_revocation_republished",
            "Times Redis had lost the revocation set and this worker recorded the entries it held again",
        )
        republished.add_metric([], feed.republished)
        yield from (entries, version, waiters, declined, signed, failures, republished)
