"""REDIS_URL picks one server, Sentinel or Cluster; a bad URL fails at start without its password."""

from __future__ import annotations

import re

import pytest

from services.auth.redis_client import Topology, parse_url
from services.auth.settings import Settings
from shared.core import SettingsError

DEV = {"APP_ENV": "dev", "SESSION_SECRET": "s3cr3t-" + "k" * 40}
PASSWORD = "hunter2-p%40ss"


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@redis.internal:6380/2", "unix:///run/redis.sock?db=1"]
)
def test_single_server_urls_are_left_to_redis_py(url: str) -> None:
    assert parse_url(url) == Topology("single")


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    topology = parse_url(
        f"redis+sentinel://app:{PASSWORD}@s1.internal:26379,[::1]:26380,10.0.0.3:26381/primary/2"
    )
    assert topology == Topology(
        "sentinel",
        (("s1.internal", 26379), ("::1", 26380), ("10.0.0.3", 26381)),
        service="primary",
        db=2,
        username="app",
        password="hunter2-p@ss",
    )


def test_a_sentinel_url_without_a_database_uses_database_0() -> None:
    topology = parse_url("redis+sentinel://127.0.0.1:26379/mymaster")
    assert (topology.service, topology.db, topology.password) == ("mymaster", 0, None)


def test_a_cluster_url_lists_its_startup_nodes() -> None:
    topology = parse_url(f"redis+cluster://:{PASSWORD}@n1:7000,n2:7001/")
    assert topology == Topology("cluster", (("n1", 7000), ("n2", 7001)), password="hunter2-p@ss")


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("127.0.0.1:6379", "must start with one of"),
        ("http://127.0.0.1:6379", "unknown scheme 'http'"),
        ("redis://127.0.0.1:port/0", "not a valid redis:// URL"),
        ("redis+sentinel://127.0.0.1:26379", "service name"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/one", "database number"),
        ("redis+sentinel://127.0.0.1:26379/a/1/extra", "service name"),
        ("redis+sentinel://127.0.0.1/mymaster", "port on every host"),
        ("redis+cluster://n1:7000,,n2:7001", "port on every host"),
        ("redis+cluster://n1:70000", "port on every host"),
        ("redis+cluster://n1:7000/1", "database 0 only"),
        ("redis+cluster://n1:7000?read_from_replicas=yes", "no query string"),
    ],
)
def test_a_malformed_url_is_refused_with_the_reason(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        parse_url(url)


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://app:{PASSWORD}@s1:26379",
        f"redis+cluster://app:{PASSWORD}@n1",
        f"redis://app:{PASSWORD}@host:port/0",
        f"ftp://app:{PASSWORD}@host/0",
    ],
)
def test_settings_fail_fast_naming_redis_url_without_its_password(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**DEV, "REDIS_URL": url})
    assert str(caught.value).startswith("REDIS_URL ")
    assert "hunter2" not in str(caught.value)


def test_settings_keep_a_sentinel_url_as_a_masked_secret() -> None:
    url = f"redis+sentinel://app:{PASSWORD}@s1:26379,s2:26379/primary"
    settings = Settings.from_env({**DEV, "REDIS_URL": url})
    assert settings.redis_url.value == url
    assert "hunter2" not in repr(settings)
