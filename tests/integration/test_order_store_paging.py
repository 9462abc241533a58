"""The order store's pages and quota on a real SQLite file, as the service's workers share it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.orders import domain
from services.orders.domain import OrderDraft
from services.orders.paging import Position
from services.orders.store import OrderStore, open_order_store

SAME_MOMENT = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[OrderStore]:
    async with open_order_store(tmp_path / "orders.sqlite3") as store:
        yield store


async def place(store: OrderStore, owner: str, item: str, *, now: datetime, quota: int = 1000) -> bool:
    order = domain.place_order(OrderDraft(item, 1), owner=owner, order_id=domain.new_order_id(), now=now)
    return await store.add(order, max_per_owner=quota)


def walk(store: OrderStore, owner: str | None, limit: int) -> list[list[str]]:
    """Every page of a listing, as the route pages it, by item."""
    pages, after = [], None
    while True:
        rows = store.page(owner, limit=limit + 1, after=after)
        pages.append([row.item for row in rows[:limit]])
        if len(rows) <= limit:
            return pages
        after = Position(created_at=rows[limit - 1].created_at, order_id=rows[limit - 1].id)


async def test_orders_placed_in_the_same_microsecond_page_in_insertion_order(store: OrderStore) -> None:
    for n in range(5):
        assert await place(store, "alice", f"same {n}", now=SAME_MOMENT)
    assert walk(store, "alice", 1) == [["same 4"], ["same 3"], ["same 2"], ["same 1"], ["same 0"]]
    assert walk(store, "alice", 2) == [["same 4", "same 3"], ["same 2", "same 1"], ["same 0"]]


async def test_a_page_after_a_position_never_crosses_into_another_owner(store: OrderStore) -> None:
    for n in range(3):
        await place(store, "alice", f"alice {n}", now=SAME_MOMENT)
        await place(store, "bob", f"bob {n}", now=SAME_MOMENT)
    assert walk(store, "alice", 1) == [["alice 2"], ["alice 1"], ["alice 0"]]
    assert walk(store, None, 4) == [["bob 2", "alice 2", "bob 1", "alice 1"], ["bob 0", "alice 0"]]


async def test_a_position_naming_no_order_gives_an_empty_page_not_an_error(store: OrderStore) -> None:
    await place(store, "alice", "tea", now=SAME_MOMENT)
    ghost = Position(created_at="2025-01-31T12:00:00.123456Z", order_id=uuid.uuid4().hex)
    assert store.page("alice", limit=5, after=ghost) == []


async def test_the_quota_holds_when_two_workers_insert_at_once(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite3"
    async with open_order_store(path) as first, open_order_store(path) as second:
        placed = await asyncio.gather(
            *(
                place(worker, "mallory", "x", now=datetime.now(UTC), quota=10)
                for worker in [first, second] * 15
            )
        )
    assert placed.count(True) == 10
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT count(*) FROM orders").fetchone() == (10,)


async def test_every_worker_and_restart_on_one_file_signs_cursors_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite3"
    async with open_order_store(path) as first, open_order_store(path) as second:
        keys = {first.cursor_key, second.cursor_key}
    async with open_order_store(path) as restarted:
        keys.add(restarted.cursor_key)
    assert len(keys) == 1
    async with open_order_store(tmp_path / "other.sqlite3") as other:
        assert other.cursor_key not in keys
    assert len(keys.pop()) >= 32


async def test_the_reader_cannot_write(store: OrderStore) -> None:
    with pytest.raises(sqlite3.OperationalError):
        store._reader.execute("DELETE FROM orders")


async def test_a_page_reads_at_most_its_limit_from_the_database(store: OrderStore) -> None:
    for n in range(5):
        await place(store, "alice", f"tea {n}", now=SAME_MOMENT)
    first = store.page("alice", limit=2, after=None)
    assert [row.item for row in first] == ["tea 4", "tea 3"]
    after = Position(created_at=first[-1].created_at, order_id=first[-1].id)
    assert len(store.page("alice", limit=2, after=after)) == 2
    assert len(store.page(None, limit=3, after=None)) == 3
