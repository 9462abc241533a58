"""Sessions on a real 3-primary Redis Cluster (Valkey, started by the tests): the stores and the app.

The single-server store tests run on the Cluster too, unchanged (``TOPOLOGY_RERUNS`` in the
conftest): their ``client`` is then a ``RedisCluster``. They cover every script, the same-slot
MULTI/EXEC of ``SessionStore.delete`` and the scans; the scripts that reach sessions by names
built inside Lua (undeclared keys) only work because those keys share the index's slot.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from starlette.testclient import TestClient

from deploy.redis_topologies import LocalCluster
from services.auth import domain
from services.auth.app import create_app
from services.auth.domain import SessionPolicy
from services.auth.redis_client import connect
from services.auth.store import Refusal, SessionStore, UserStore
from shared.core import ServiceUnavailable
from tests.integration.test_auth_app import Session, settings_for, wait_for_demo_users

NOW = 1_800_000_000.0
POLICY = SessionPolicy(idle=1800, absolute=86400)


@pytest.fixture
def redis_topology() -> str:
    return "cluster"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RedisCluster]:
    """The store's client on the Cluster, as auth connects it."""
    client = connect(redis_url, 0.5)
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


def _handle(used: tuple[domain.Session, domain.User] | Refusal) -> str | None:
    return used[0].handle if isinstance(used, tuple) else None


def _keys_by_node(cluster: LocalCluster) -> dict[int, set[str]]:
    found = {}
    for port in cluster.ports:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as node:
            found[port] = set(node.scan_iter(count=1000))
    return found


async def _users_with_sessions(client: RedisCluster, count: int) -> list[tuple[domain.User, domain.Session]]:
    users, sessions = UserStore(client), SessionStore(client, POLICY)
    created = []
    for number in range(count):
        user = await users.create(f"user{number}@example.com", "user", "hash")
        session = domain.new_session(domain.new_session_id(user.id), user, NOW, user_agent="", ip="")
        await sessions.create(session, NOW)
        created.append((user, session))
    return created


async def test_redis_url_gives_a_cluster_client_that_finds_every_primary(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    assert isinstance(client, RedisCluster)
    assert await SessionStore(client, POLICY).ping()
    assert sorted(int(node.port) for node in client.get_primaries()) == sorted(redis_cluster.ports)


async def test_each_users_keys_share_one_node_and_users_spread_over_every_node(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    created = await _users_with_sessions(client, 30)
    user, session = created[0]
    await SessionStore(client, POLICY).use(
        user.id, session.handle, NOW + 1, token_budget=domain.RateLimit(5, 60)
    )
    by_node = _keys_by_node(redis_cluster)
    homes = set()
    for user, _ in created:
        holding = {port for port, keys in by_node.items() if any(f"{{{user.id}}}" in key for key in keys)}
        # The account, its session, the index and the token budget: one slot, so one node.
        assert len(holding) == 1, f"the keys of {user.id} are spread over {holding}"
        homes |= holding
    # Random ids miss one of three nodes with a chance of 3 * (2/3)**30, about 1 in 60,000.
    assert homes == set(redis_cluster.ports)


async def test_listing_users_scans_every_primary(redis_cluster: LocalCluster, client: RedisCluster) -> None:
    created = await _users_with_sessions(client, 9)
    listed = await UserStore(client).all()
    assert [user.email for user in listed] == sorted(user.email for user, _ in created)
    assert len({redis_cluster.port_for_key(f"user:{{{user.id}}}") for user, _ in created}) > 1


async def test_logout_everywhere_and_session_listing_work_for_users_on_every_node(
    client: RedisCluster,
) -> None:
    sessions = SessionStore(client, POLICY)
    created = await _users_with_sessions(client, 6)
    for user, first in created:
        second = domain.new_session(domain.new_session_id(user.id), user, NOW + 1, user_agent="", ip="")
        await sessions.create(second, NOW + 1)
        listed = await sessions.live_for_user(user.id, NOW + 2)
        assert {session.handle for session in listed} == {first.handle, second.handle}
        assert await sessions.delete_all_for_user(user.id) == 2
        assert await sessions.live_for_user(user.id, NOW + 2) == []


async def test_a_hung_node_costs_its_users_a_503_within_two_timeouts_and_heals_without_a_restart(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    sessions = SessionStore(client, POLICY)
    (user, session), *_ = await _users_with_sessions(client, 1)
    port = redis_cluster.port_for_key(f"user:{{{user.id}}}")
    server = next(server for server in redis_cluster.servers if server.port == port)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await sessions.use(user.id, session.handle, NOW + 1)
        elapsed = time.monotonic() - started
    finally:
        os.kill(server.pid, signal.SIGCONT)
    # The client's 0.5 s timeout, retried once after it reloads the layout from the live nodes.
    assert elapsed < 1.5
    found = await sessions.use(user.id, session.handle, NOW + 2)
    assert isinstance(found, tuple)
    assert found[1] == user


async def test_an_unreachable_cluster_is_a_503_not_a_crash() -> None:
    from deploy.processes import free_port

    client = connect(f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}", 0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await SessionStore(client, POLICY).ping()
        assert time.monotonic() - started < 2.0
    finally:
        await client.aclose()


async def test_a_burst_larger_than_the_pool_waits_for_connections_instead_of_failing(
    redis_url: str, client: RedisCluster
) -> None:
    created = await _users_with_sessions(client, 6)
    small = connect(redis_url, 0.5, max_connections=4)
    try:
        sessions = SessionStore(small, POLICY)
        found = await asyncio.gather(
            *(sessions.use(user.id, session.handle, NOW + 1) for user, session in created * 40)
        )
    finally:
        await small.aclose()
    assert [_handle(used) for used in found] == [session.handle for _, session in created * 40]


@pytest.fixture
def auth(redis_url: str, keys_dir: Path) -> Iterator[TestClient]:
    app = create_app(settings_for(redis_url, keys_dir))
    with TestClient(app, base_url="http://localhost:8001") as test_client:
        wait_for_demo_users(test_client)
        yield test_client


def test_the_auth_app_logs_in_mints_and_logs_out_on_the_cluster(auth: TestClient) -> None:
    ready = auth.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["redis"] is True
    alice, admin = Session(auth), Session(auth, "admin@example.com")
    assert alice.mint().status_code == 200
    assert admin.mint().status_code == 200
    listed = auth.get("/sessions", headers=alice.headers())
    assert listed.status_code == 200
    assert auth.post("/logout", headers=alice.headers()).status_code == 200
    refused = alice.mint()
    assert refused.status_code == 401
    assert refused.json()["error"] == "no_session"
    assert admin.mint().status_code == 200, "another user's session is untouched"


async def test_a_burst_on_a_fresh_client_finds_every_session_on_every_node(
    redis_url: str, client: RedisCluster
) -> None:
    created = await _users_with_sessions(client, 6)
    for _ in range(5):
        # A new client each time: its first commands race through its first look at the layout.
        fresh = connect(redis_url, 0.5)
        try:
            sessions = SessionStore(fresh, POLICY)
            found = await asyncio.gather(
                *(sessions.use(user.id, session.handle, NOW + 1) for user, session in created * 5)
            )
        finally:
            await fresh.aclose()
        assert [_handle(used) for used in found] == [session.handle for _, session in created * 5]
