"""Real Redis-compatible servers for the integration tier, started by the tests themselves.

``redis_url`` is a single server unless the test asks for another topology: a module sets
``redis_topology`` for all its tests, and the store tests named in ``TOPOLOGY_RERUNS`` run
once per topology listed there, on a Redis Cluster and behind Sentinel as well.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from argon2 import PasswordHasher

from deploy.redis_server import RedisServer
from deploy.redis_topologies import LocalCluster, LocalSentinel
from services.auth import passwords
from tests.support.hashing import CHEAP_ARGON2

# The store tests that run again on the other topologies, by module and name. Between them they
# reach every Lua script, the same-slot MULTI/EXEC of ``SessionStore.delete`` and the scans.
_EVERYWHERE = ("server", "cluster", "sentinel")
_ON_CLUSTER = ("server", "cluster")
TOPOLOGY_RERUNS: dict[str, dict[str, tuple[str, ...]]] = {
    "test_session_management.py": {
        "test_a_budgeted_touch_of_a_revoked_session_spends_nothing": _ON_CLUSTER,
        "test_a_refund_gives_back_a_reserved_attempt": _ON_CLUSTER,
        "test_a_session_expired_by_the_policy_is_not_listed_and_leaves_the_index": _ON_CLUSTER,
        "test_a_session_redis_expired_is_pruned_from_the_index_on_read": _ON_CLUSTER,
        "test_concurrent_logins_and_revocations_keep_the_index_exact": _EVERYWHERE,
        "test_dead_index_entries_are_pruned_on_write": _ON_CLUSTER,
        "test_every_throttle_counter_expires_with_its_window": _ON_CLUSTER,
        "test_live_sessions_are_listed_from_the_index": _EVERYWHERE,
        "test_parallel_guesses_cannot_overspend_a_login_budget": _EVERYWHERE,
        "test_revoke_others_replaces_every_session_in_one_step": _EVERYWHERE,
        "test_the_index_expires_no_sooner_than_its_longest_session": _ON_CLUSTER,
        "test_the_stores_script_enforces_both_timeouts_to_the_millisecond": _ON_CLUSTER,
        "test_token_uses_past_the_rate_wait_for_the_window_and_leave_the_session_untouched": _EVERYWHERE,
        "test_touch_reports_a_session_revoked_since_it_was_read": _ON_CLUSTER,
    },
    "test_native_sessions.py": {
        # The refresh script on a Cluster: all of its keys carry the user's hash tag.
        "test_concurrent_refreshes_with_one_handle_rotate_once": _ON_CLUSTER,
    },
    "test_session_script.py": {
        "test_a_server_that_lost_its_scripts_is_sent_the_source_once_and_the_use_succeeds": _EVERYWHERE,
        # The link's topologies: a Cluster's script goes through the client's own path.
        "test_concurrent_uses_each_get_their_own_session_back": ("server", "sentinel"),
    },
    "test_revocation_store.py": {
        "test_a_later_cutoff_for_the_same_session_is_kept_beside_the_earlier": _ON_CLUSTER,
        "test_a_lost_meta_key_starts_a_new_epoch_rather_than_a_lower_version": _ON_CLUSTER,
        "test_an_empty_set_gets_an_epoch_once_and_version_zero": _EVERYWHERE,
        "test_concurrent_recordings_each_get_their_own_version": _EVERYWHERE,
        "test_entries_past_their_end_are_pruned_on_read_and_write": _EVERYWHERE,
        "test_every_recording_bumps_the_version_by_one_and_keeps_the_epoch": _EVERYWHERE,
    },
    "test_session_store.py": {
        "test_a_use_slides_the_records_expiry_in_redis_too": _ON_CLUSTER,
        "test_absolute_timeout_wins_over_activity": _ON_CLUSTER,
        "test_created_session_is_found_by_its_handle": _EVERYWHERE,
        "test_delete_all_for_user_revokes_every_session": _EVERYWHERE,
        "test_delete_removes_session_and_index_entry": _EVERYWHERE,
        "test_idle_session_expires_server_side": _ON_CLUSTER,
        "test_malformed_record_is_discarded": _ON_CLUSTER,
        "test_redis_ttl_follows_the_policy": _EVERYWHERE,
        "test_session_is_stored_under_a_hash_never_the_raw_id": _ON_CLUSTER,
        "test_touch_after_delete_leaves_no_stub": _EVERYWHERE,
        "test_touch_slides_the_idle_timer": _ON_CLUSTER,
        "test_user_email_is_unique": _EVERYWHERE,
    },
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    reruns = TOPOLOGY_RERUNS.get(metafunc.definition.path.name)
    if reruns is None:
        return
    # A renamed or deleted store test must not silently stop running on the other topologies.
    missing = sorted(name for name in reruns if not hasattr(metafunc.module, name))
    if missing:
        raise pytest.UsageError(
            f"TOPOLOGY_RERUNS names tests that {metafunc.module.__name__} lacks: {missing}"
        )
    topologies = reruns.get(metafunc.function.__name__)
    if topologies is not None:
        metafunc.parametrize("redis_topology", topologies, indirect=True)


@pytest.fixture
def redis_topology(request: pytest.FixtureRequest) -> str:
    """Where ``redis_url`` points: ``server``, ``cluster`` or ``sentinel``."""
    topology: str = getattr(request, "param", "server")
    return topology


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-primary Redis Cluster (Valkey)."""
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    """A primary, a replica and three sentinels."""
    with LocalSentinel(tmp_path_factory.mktemp("sentinel")) as started:
        yield started


@pytest.fixture
def redis_url(redis_topology: str, request: pytest.FixtureRequest) -> str:
    """The ``REDIS_URL`` of ``redis_topology``, with every database emptied for each test."""
    # Looked up by name, so a test on one topology never starts the others.
    if redis_topology == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        for node in cluster.servers:
            if not node.running:
                pytest.fail(f"cluster node {node.port} died; its log: {node.log_path}")
        cluster.flush()
        return cluster.url
    if redis_topology == "sentinel":
        deployment: LocalSentinel = request.getfixturevalue("redis_sentinel")
        with redis.Redis(host="127.0.0.1", port=deployment.primary_port()) as primary:
            primary.flushall()
        return deployment.url
    server: RedisServer = request.getfixturevalue("redis_server")
    if not server.running:
        server.start()
    client = redis.Redis.from_url(server.url)
    client.flushdb()
    client.close()
    return server.url


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    from services.auth.key_store import init_keys

    directory = tmp_path / "keys"
    init_keys(directory)
    return directory


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "argon2_cost: auth apps made in process hash passwords at production cost"
    )


@pytest.fixture(autouse=True)
def cheap_argon2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Auth apps made in process hash at a cheap argon2 cost, unless the test is marked ``argon2_cost``.

    Each app seeds two demo users and a dummy hash, and each login verifies one: at production
    cost that was half of this tier's time on a loaded machine. A test of the cost itself (that
    unknown emails take as long as wrong passwords) keeps it. The command line runs in a process
    of its own and always hashes at production cost.
    """
    if request.node.get_closest_marker("argon2_cost") is None:
        monkeypatch.setattr(passwords, "PasswordHasher", functools.partial(PasswordHasher, **CHEAP_ARGON2))
