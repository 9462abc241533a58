"""The revocation set in a real Redis: recording, versions, expiry and surviving restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from deploy.redis_server import RedisServer
from services.auth.redis_client import Client, connect
from services.auth.revocations import Entry, Kind, revoke
from services.auth.store import RevocationStore

NOW = time.time()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    connection = connect(redis_url, 2.0)
    yield connection
    await connection.aclose()


async def test_an_empty_set_gets_an_epoch_once_and_version_zero(client: Client) -> None:
    store = RevocationStore(client)
    assert await store.probe() is None
    first = await store.read(NOW)
    assert first.version == 0
    assert first.entries == ()
    again = await store.read(NOW)
    assert again.epoch == first.epoch
    assert await store.probe() == (first.epoch, 0)


async def test_every_recording_bumps_the_version_by_one_and_keeps_the_epoch(client: Client) -> None:
    store = RevocationStore(client)
    epoch, version = await store.record(revoke(Kind.SESSION, ["s1", "s2"], NOW, token_ttl=300), NOW)
    assert version == 1
    assert await store.record(revoke(Kind.USER, ["u1"], NOW, token_ttl=300), NOW) == (epoch, 2)
    current = await store.read(NOW)
    assert (current.epoch, current.version) == (epoch, 2)
    assert sorted(current.entries) == sorted(
        [
            *revoke(Kind.SESSION, ["s1", "s2"], NOW, token_ttl=300),
            *revoke(Kind.USER, ["u1"], NOW, token_ttl=300),
        ]
    )


async def test_entries_past_their_end_are_pruned_on_read_and_write(client: Client, redis_url: str) -> None:
    store = RevocationStore(client)
    short = Entry(Kind.SESSION, "short", 100, 200)
    lasting = Entry(Kind.SESSION, "lasting", 100, 10_000)
    await store.record([short, lasting], 150)
    assert {entry.id for entry in (await store.read(150)).entries} == {"short", "lasting"}
    assert [entry.id for entry in (await store.read(200)).entries] == ["lasting"]
    # Pruned in Redis itself, not only hidden: the set is bounded by recent operations.
    assert await client.zcard("revocations:{revocations}:entries") == 1
    await store.record([Entry(Kind.USER, "u", 300, 400)], 10_000)
    assert (await store.read(10_000)).entries == ()
    assert await client.zcard("revocations:{revocations}:entries") == 0


async def test_a_later_cutoff_for_the_same_session_is_kept_beside_the_earlier(client: Client) -> None:
    store = RevocationStore(client)
    await store.record([Entry(Kind.SESSION, "s", 100, 430)], 100)
    await store.record([Entry(Kind.SESSION, "s", 101, 431)], 101)
    await store.record([Entry(Kind.SESSION, "s", 101, 431)], 101)
    entries = (await store.read(101)).entries
    assert sorted(entry.before for entry in entries) == [100, 101]


async def test_a_lost_meta_key_starts_a_new_epoch_rather_than_a_lower_version(client: Client) -> None:
    store = RevocationStore(client)
    epoch, _ = await store.record(revoke(Kind.USER, ["u1"], NOW, token_ttl=300), NOW)
    await client.hdel("revocations:{revocations}:meta", "version")
    new_epoch, version = await store.record(revoke(Kind.USER, ["u2"], NOW, token_ttl=300), NOW)
    assert new_epoch != epoch
    assert version == 1
    assert {entry.id for entry in (await store.read(NOW)).entries} == {"u1", "u2"}


async def test_concurrent_recordings_each_get_their_own_version(client: Client) -> None:
    store = RevocationStore(client)
    results = await asyncio.gather(
        *(store.record(revoke(Kind.SESSION, [f"s{i}"], NOW, token_ttl=300), NOW) for i in range(20))
    )
    assert sorted(version for _, version in results) == list(range(1, 21))
    assert len((await store.read(NOW)).entries) == 20


def test_the_set_survives_a_redis_restart_with_its_append_only_file(tmp_path: Path) -> None:
    async def record(url: str) -> tuple[str, int]:
        connection = connect(url, 2.0)
        try:
            return await RevocationStore(connection).record(
                revoke(Kind.USER, ["u1"], NOW, token_ttl=300), NOW
            )
        finally:
            await connection.aclose()

    async def read(url: str) -> tuple[str, int, tuple[Entry, ...]]:
        connection = connect(url, 2.0)
        try:
            current = await RevocationStore(connection).read(NOW)
            return current.epoch, current.version, current.entries
        finally:
            await connection.aclose()

    with RedisServer(tmp_path / "data", persist=True) as server:
        epoch, version = asyncio.run(record(server.url))
        server.stop()
        server.start()
        with redis.Redis.from_url(server.url) as check:
            assert check.config_get("appendonly")["appendonly"] == "yes"
        assert asyncio.run(read(server.url)) == (
            epoch,
            version,
            tuple(revoke(Kind.USER, ["u1"], NOW, token_ttl=300)),
        )
