"""The session and user stores against a real server: lifetimes, indexes and hashing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.auth import domain
from services.auth.domain import SessionPolicy, User
from services.auth.redis_client import connect
from services.auth.store import Refusal, SessionStore, UserStore
from shared.core import Conflict, ServiceUnavailable
from tests.integration.test_session_management import _account, listed

NOW = 1_800_000_000.0
ALICE = User(id="u-alice", email="alice@example.com", role="user", password_hash="x")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_url, 0.5)
    yield client
    await client.aclose()


@pytest.fixture
def sessions(client: aioredis.Redis) -> SessionStore:
    return SessionStore(client, SessionPolicy(idle=1800, absolute=86400))


async def _new(sessions: SessionStore, now: float = NOW) -> tuple[str, domain.Session]:
    session_id = domain.new_session_id("u-alice")
    session = domain.new_session(session_id, ALICE, now, user_agent="pytest", ip="127.0.0.1")
    await sessions.create(session, now)
    return session_id, session


async def _use(sessions: SessionStore, session: domain.Session, now: float) -> domain.Session:
    used = await sessions.use(session.user_id, session.handle, now)
    assert isinstance(used, tuple), used
    return used[0]


async def test_created_session_is_found_by_its_handle(sessions: SessionStore) -> None:
    _, session = await _new(sessions)
    assert await listed(sessions, session.user_id, session.handle, NOW + 1) == session


async def test_session_is_stored_under_a_hash_never_the_raw_id(
    sessions: SessionStore, client: aioredis.Redis
) -> None:
    session_id, _ = await _new(sessions)
    dump = []
    async for key in client.scan_iter():
        dump.append(str(key))
        value = await client.dump(key)
        assert session_id.encode() not in (value or b"")
    assert all(session_id not in key for key in dump)
    assert f"session:{{{ALICE.id}}}:{domain.session_handle(session_id)}" in dump


async def test_idle_session_expires_server_side(sessions: SessionStore) -> None:
    _, session = await _new(sessions)
    assert await listed(sessions, session.user_id, session.handle, NOW + 1799.999) is not None
    assert await listed(sessions, session.user_id, session.handle, NOW + 1800) is None
    # Expired on sight means deleted, not merely hidden.
    assert await listed(sessions, session.user_id, session.handle, NOW) is None


async def test_touch_slides_the_idle_timer(sessions: SessionStore, client: aioredis.Redis) -> None:
    await _account(client)
    _, session = await _new(sessions)
    touched = await _use(sessions, session, NOW + 1000)
    assert touched.last_seen == NOW + 1000
    assert touched.expires_at == NOW + 2800
    assert await listed(sessions, session.user_id, session.handle, NOW + 2500) is not None


async def test_a_use_changes_nothing_but_last_seen(sessions: SessionStore, client: aioredis.Redis) -> None:
    await _account(client)
    _, session = await _new(sessions)
    touched = await _use(sessions, session, NOW + 5)
    assert touched == dataclasses.replace(session, last_seen=NOW + 5, expires_at=NOW + 1805)


async def test_a_use_slides_the_records_expiry_in_redis_too(
    sessions: SessionStore, client: aioredis.Redis
) -> None:
    # Redis must keep a used session for the whole new idle window, not until the old deadline.
    await _account(client)
    _, session = await _new(sessions)
    await _use(sessions, session, NOW + 1000)
    remaining = await client.pttl(f"session:{{{ALICE.id}}}:{session.handle}")
    assert 1_795_000 <= remaining <= 1_800_000


async def test_absolute_timeout_wins_over_activity(sessions: SessionStore, client: aioredis.Redis) -> None:
    await _account(client)
    _, session = await _new(sessions)
    now = NOW
    # Used every 25 minutes, well inside the idle window, for a day.
    while now < NOW + 86400 - 1500:
        now += 1500
        session = await _use(sessions, session, now)
    assert session.expires_at == NOW + 86400
    assert await listed(sessions, session.user_id, session.handle, NOW + 86399.999) is not None
    assert await listed(sessions, session.user_id, session.handle, NOW + 86400) is None


async def test_redis_ttl_follows_the_policy(sessions: SessionStore, client: aioredis.Redis) -> None:
    import time

    now = time.time()
    _, session = await _new(sessions, now)
    ttl = await client.ttl(f"session:{{{ALICE.id}}}:{session.handle}")
    assert 1795 <= ttl <= 1800
    # Near the absolute limit, the TTL shrinks to what is left of it.
    await _account(client)
    used_at = now
    while used_at < now + 86400 - 60:
        used_at = min(used_at + 1500, now + 86400 - 60)
        await _use(sessions, session, used_at)
    assert 0 < await client.ttl(f"session:{{{ALICE.id}}}:{session.handle}") <= 60


async def test_delete_removes_session_and_index_entry(sessions: SessionStore, client: aioredis.Redis) -> None:
    _, session = await _new(sessions)
    await sessions.delete(session.user_id, session.handle)
    assert await listed(sessions, session.user_id, session.handle, NOW) is None
    assert not await client.exists(f"session:{{{ALICE.id}}}:{session.handle}")
    assert not await client.sismember(f"user-sessions:{{{ALICE.id}}}", session.handle)


async def test_delete_all_for_user_revokes_every_session(sessions: SessionStore) -> None:
    for _ in range(3):
        await _new(sessions)
    other = domain.new_session(
        domain.new_session_id("u-bob"),
        User("u-bob", "bob@example.com", "user", "x"),
        NOW,
        user_agent="",
        ip="",
    )
    await sessions.create(other, NOW)
    assert await sessions.delete_all_for_user(ALICE.id) == 3
    assert await sessions.live_for_user(ALICE.id, NOW) == []
    assert await listed(sessions, other.user_id, other.handle, NOW) == other


async def test_malformed_record_is_discarded(sessions: SessionStore, client: aioredis.Redis) -> None:
    await client.hset("session:{u}:bogus", mapping={"created": "not-a-number"})
    await _account(client, User("u", "u@example.com", "user", "x"))
    assert await sessions.use("u", "bogus", NOW) is Refusal.NO_SESSION
    assert not await client.exists("session:{u}:bogus")


async def test_user_email_is_unique(client: aioredis.Redis) -> None:
    users = UserStore(client)
    created = await users.create("carol@example.com", "user", "hash")
    with pytest.raises(Conflict):
        await users.create("carol@example.com", "admin", "hash2")
    assert await users.by_email("carol@example.com") == created
    assert await users.by_id(created.id) == created


async def test_store_answers_503_quickly_when_redis_is_unreachable() -> None:
    import time

    from deploy.processes import free_port

    client = connect(f"redis://127.0.0.1:{free_port()}/0", 0.5)
    store = SessionStore(client, SessionPolicy(idle=10, absolute=20))
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await store.live_for_user("u", NOW)
    assert time.monotonic() - started < 2.0
    await client.aclose()


async def test_touch_after_delete_leaves_no_stub(sessions: SessionStore, client: aioredis.Redis) -> None:
    await _account(client)
    _, session = await _new(sessions)
    await sessions.delete(session.user_id, session.handle)
    assert await sessions.use(session.user_id, session.handle, NOW + 10) is Refusal.NO_SESSION
    assert not await client.exists(f"session:{{{ALICE.id}}}:{session.handle}")


async def test_store_answers_503_within_one_timeout_when_redis_hangs(tmp_path: Path) -> None:
    import os
    import signal
    import time

    from deploy.redis_server import RedisServer

    with RedisServer(tmp_path / "hung") as server:
        client = connect(server.url, 0.5)
        store = SessionStore(client, SessionPolicy(idle=10, absolute=20))
        assert await store.live_for_user("u", NOW) == []
        pid = int((await client.info("server"))["process_id"])
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable):
                await store.live_for_user("u", NOW)
            elapsed = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        await client.aclose()
    # One 0.5 s socket timeout, not a retry on top of it.
    assert elapsed < 0.9


async def test_a_burst_larger_than_the_pool_waits_for_connections_instead_of_failing(redis_url: str) -> None:
    client = connect(redis_url, 0.5, max_connections=4)
    try:
        sessions = SessionStore(client, SessionPolicy(idle=1800, absolute=86400))
        _, session = await _new(sessions)
        found = await asyncio.gather(*(sessions.live_for_user(session.user_id, NOW + 1) for _ in range(200)))
    finally:
        await client.aclose()
    assert found == [[session]] * 200
