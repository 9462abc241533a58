"""Attacks on availability run against real clusters, started with the end-to-end fixtures."""

from tests.e2e.conftest import browser, client, cluster, cluster_factory, secrets_seen

__all__ = ["browser", "client", "cluster", "cluster_factory", "secrets_seen"]
