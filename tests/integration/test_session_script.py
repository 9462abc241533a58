"""The session path's one script call against real servers: NOSCRIPT, restarts, hangs, one socket."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from deploy.processes import free_port
from deploy.redis_server import RedisServer
from services.auth import domain
from services.auth.domain import SessionPolicy, User
from services.auth.redis_client import Client, Script, connect
from services.auth.store import _USE, SessionStore
from shared.core import ServiceUnavailable
from tests.integration.test_session_management import _account

NOW = 1_800_000_000.0
POLICY = SessionPolicy(idle=1800, absolute=86400)
ALICE = User(id="u-alice", email="alice@example.com", role="user", password_hash="x")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    client = connect(redis_url, 0.5)
    yield client
    await client.aclose()


async def _sessions_of(sessions: SessionStore, client: Client, count: int) -> list[domain.Session]:
    users = [_user(number) for number in range(count)]
    created = []
    for user in users:
        await _account(client, user)  # type: ignore[arg-type]
        session = domain.new_session(domain.new_session_id(user.id), user, NOW, user_agent="t", ip="::1")
        await sessions.create(session, NOW)
        created.append(session)
    return created


def _user(number: int) -> User:
    return User(id=f"u-{number}", email=f"u{number}@example.com", role="user", password_hash="x")


async def _used_handle(sessions: SessionStore, session: domain.Session, now: float = NOW + 1) -> str:
    used = await sessions.use(session.user_id, session.handle, now)
    assert isinstance(used, tuple), used
    return used[0].handle


async def _flush_scripts(client: Client) -> None:
    if isinstance(client, RedisCluster):
        await client.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.ALL_NODES)
    else:
        await client.script_flush()


async def test_a_server_that_lost_its_scripts_is_sent_the_source_once_and_the_use_succeeds(
    client: Client,
) -> None:
    sessions = SessionStore(client, POLICY)
    [session] = await _sessions_of(sessions, client, 1)
    assert await _used_handle(sessions, session) == session.handle
    # What a restart, or a failover to a replica that never ran the script, looks like to auth.
    await _flush_scripts(client)
    assert await _used_handle(sessions, session, NOW + 2) == session.handle
    # EVAL cached the script where the session lives, so the next use is an EVALSHA again.
    sha = Script(client, _USE).sha
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(f"session:{{{session.user_id}}}:{session.handle}")
        exists = await client.execute_command("SCRIPT EXISTS", sha, target_nodes=node)
    else:
        exists = await client.script_exists(sha)
    assert exists == [True]


async def test_concurrent_uses_each_get_their_own_session_back(client: Client) -> None:
    sessions = SessionStore(client, POLICY)
    created = await _sessions_of(sessions, client, 12)
    wanted = [random.choice(created) for _ in range(300)]
    found = await asyncio.gather(*(_used_handle(sessions, session) for session in wanted))
    assert found == [session.handle for session in wanted]


async def test_the_session_path_keeps_one_socket_however_many_requests_run_at_once(
    client: aioredis.Redis,
) -> None:
    sessions = SessionStore(client, POLICY)
    created = await _sessions_of(sessions, client, 4)
    before = len(await client.client_list())
    await asyncio.gather(*(_used_handle(sessions, session) for session in created * 50))
    # The pool's connections of the fixture's own calls were there before; the link adds one.
    assert len(await client.client_list()) <= before + 1


async def test_the_next_use_after_a_restart_succeeds_on_a_new_socket(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "restart", persist=True) as server:
        client = connect(server.url, 0.5)
        try:
            sessions = SessionStore(client, POLICY)
            [session] = await _sessions_of(sessions, client, 1)
            assert await _used_handle(sessions, session) == session.handle
            server.stop()
            with pytest.raises(ServiceUnavailable):
                await sessions.use(session.user_id, session.handle, NOW + 2)
            server.start()
            # A new socket, a server without the script (NOSCRIPT), and the session it kept.
            assert await _used_handle(sessions, session, NOW + 3) == session.handle
        finally:
            await client.aclose()


async def test_a_hung_server_costs_one_timeout_and_the_next_use_after_it_wakes_succeeds(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "hung") as server:
        client = connect(server.url, 0.5)
        try:
            sessions = SessionStore(client, POLICY)
            [session] = await _sessions_of(sessions, client, 1)
            assert await _used_handle(sessions, session) == session.handle
            pid = int((await client.info("server"))["process_id"])
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                outcomes = await asyncio.gather(
                    *(sessions.use(session.user_id, session.handle, NOW + 2) for _ in range(5)),
                    return_exceptions=True,
                )
                elapsed = time.monotonic() - started
            finally:
                os.kill(pid, signal.SIGCONT)
            assert all(isinstance(outcome, ServiceUnavailable) for outcome in outcomes), outcomes
            assert elapsed < 0.9  # one 0.5 s deadline, not one per queued call
            # The replies the hung server still owed went with the closed socket: no mix-up.
            assert await _used_handle(sessions, session, NOW + 3) == session.handle
        finally:
            await client.aclose()


async def test_an_unreachable_server_is_a_503_within_the_timeout() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", 0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await SessionStore(client, POLICY).use("u", "h", NOW)
        assert time.monotonic() - started < 2.0
    finally:
        await client.aclose()


async def test_the_urls_password_and_database_reach_the_session_path(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "locked", extra_args=["--requirepass", "s3cret"]) as server:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        client = connect(url, 0.5)
        wrong = connect(f"redis://:wrong@127.0.0.1:{server.port}/3", 0.5)
        try:
            sessions = SessionStore(client, POLICY)
            [session] = await _sessions_of(sessions, client, 1)
            assert await _used_handle(sessions, session) == session.handle
            # Written where the rest of auth's data is: database 3.
            seen = await client.hget(f"session:{{{session.user_id}}}:{session.handle}", "seen")
            assert seen == str(int((NOW + 1) * 1000))
            with pytest.raises(ServiceUnavailable):
                await SessionStore(wrong, POLICY).use(session.user_id, session.handle, NOW + 2)
        finally:
            await client.aclose()
            await wrong.aclose()


async def test_a_unix_socket_url_reaches_the_session_path(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    with RedisServer(tmp_path / "unix", extra_args=["--unixsocket", str(socket_path)]):
        client = connect(f"unix://{socket_path}?db=2", 0.5)
        try:
            assert isinstance(client, aioredis.Redis)
            sessions = SessionStore(client, POLICY)
            [session] = await _sessions_of(sessions, client, 1)
            assert await _used_handle(sessions, session) == session.handle
            addresses = [entry["addr"] for entry in await client.client_list()]
            # Every connection, the link's included, came over the socket file, none over TCP.
            assert all(not address.startswith("127.0.0.1") for address in addresses)
        finally:
            await client.aclose()
