"""The dev cluster's replica configuration: names, ports and what each process is told (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.devcluster import Cluster, ClusterConfig, ClusterError


def test_one_auth_process_named_auth_by_default() -> None:
    config = ClusterConfig.from_env({})

    assert config.auth_ports == (8001,)
    assert config.auth_names == ("auth",)
    assert config.processes == ("auth", "orders", "gateway")
    assert config.port("auth") == 8001


def test_replicas_take_the_next_ports_no_other_service_uses() -> None:
    config = ClusterConfig.from_env({"AUTH_REPLICAS": "3"})

    assert config.auth_ports == (8001, 8003, 8004)
    assert config.processes == ("auth-1", "auth-2", "auth-3", "orders", "gateway")
    assert [config.port(name) for name in config.auth_names] == [8001, 8003, 8004]
    with pytest.raises(ValueError, match="auth-1, auth-2, auth-3"):
        config.port("auth")


@pytest.mark.parametrize("value", ["0", "17", "two", "-1"])
def test_a_bad_replica_count_is_refused_by_name(value: str) -> None:
    with pytest.raises(ClusterError, match="AUTH_REPLICAS"):
        ClusterConfig.from_env({"AUTH_REPLICAS": value})


def test_every_replica_shares_redis_keys_and_secret_and_the_others_get_all_of_them(tmp_path: Path) -> None:
    cluster = Cluster(ClusterConfig.on_free_ports(tmp_path, auth_replicas=2))
    one, two = (cluster.env_for(name) for name in cluster.auth_replicas)
    urls = cluster.auth_urls()
    jwks = ",".join(f"{url}/.well-known/jwks.json" for url in urls)

    assert cluster.auth_replicas == ("auth-1", "auth-2")
    assert [one["AUTH_PORT"], two["AUTH_PORT"]] == [url.rsplit(":", 1)[1] for url in urls]
    for shared in ("REDIS_URL", "AUTH_KEYS_DIR", "SESSION_SECRET_FILE", "TOKEN_ISSUER", "PUBLIC_ORIGIN"):
        assert one[shared] == two[shared], shared
    assert cluster.env_for("gateway")["AUTH_URL"] == ",".join(urls)
    assert {cluster.env_for(name)["JWKS_URL"] for name in ("orders", "gateway")} == {jwks}
    # The CLI runs as "auth": with replicas it still gets auth's configuration.
    assert cluster.env_for("auth")["AUTH_KEYS_DIR"] == one["AUTH_KEYS_DIR"]


def test_with_replicas_auth_names_all_of_them_or_none(tmp_path: Path) -> None:
    cluster = Cluster(ClusterConfig.on_free_ports(tmp_path, auth_replicas=2))

    assert not cluster.running("auth")
    with pytest.raises(ValueError, match="auth-1, auth-2"):
        cluster.service_url("auth")
    with pytest.raises(ValueError, match="auth-1, auth-2"):
        cluster.pid("auth")
    assert cluster.output("auth-2") == []
