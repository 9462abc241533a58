"""Security tests run against the same real cluster as the end-to-end tier."""

from tests.e2e.conftest import browser, client, cluster, cluster_factory, secrets_seen

__all__ = ["browser", "client", "cluster", "cluster_factory", "secrets_seen"]
