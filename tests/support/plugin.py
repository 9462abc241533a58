"""The suite's shared fixtures, registered once in ``tests/conftest.py``: the cluster and its clients."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from deploy.devcluster import Cluster, ClusterConfig
from services.auth.key_store import init_keys
from tests.support.cluster import Browser, ClusterFactory, Secrets, create_bob
from tests.support.feeds import key, second_key

# The stand-in issuer's keys, made once per run for every module that serves or verifies its feed.
__all__ = ["key", "second_key"]


@pytest.fixture(scope="session")
def cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> ClusterFactory:
    """Starts a cluster on free ports in its own directory and always stops it.

    ``auth_replicas=N`` runs N auth processes, ``auth-1`` ... ``auth-N``, behind the gateway.
    """

    @contextmanager
    def start(name: str, env: dict[str, str] | None = None, *, auth_replicas: int = 1) -> Iterator[Cluster]:
        state_dir = tmp_path_factory.mktemp(name)
        cluster = Cluster(ClusterConfig.on_free_ports(state_dir, env, auth_replicas=auth_replicas))
        # The signing key made here, by the function `services.auth keys init` calls, spares a
        # new interpreter per cluster; `make run`'s own first start is tested in test_devcluster.py.
        init_keys(cluster.keys_dir)
        try:
            cluster.start()
            create_bob(cluster)
            yield cluster
        finally:
            cluster.stop()

    return start


@pytest.fixture(scope="session")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    """One cluster shared by the modules that leave it running as they found it."""
    with cluster_factory("cluster") as started:
        yield started


@pytest.fixture(scope="session")
def secrets_seen() -> Secrets:
    return Secrets()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    """An HTTP client for the gateway at the public origin."""
    with httpx.Client(base_url=cluster.url, timeout=10.0) as http:
        yield http


@pytest.fixture
def browser(cluster: Cluster, client: httpx.Client, secrets_seen: Secrets) -> Browser:
    return Browser(cluster, client, secrets_seen)
