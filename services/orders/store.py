"""SQLite storage for orders: one connection per process, used off the event loop behind a lock."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

from services.orders.domain import Order, format_timestamp, parse_timestamp
from shared import ServiceUnavailable

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SETUP_TIMEOUT_SECONDS = 10.0

# seq keeps insertion order for orders placed within the same microsecond.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    item TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS orders_by_owner ON orders (owner, created_at, seq);
CREATE INDEX IF NOT EXISTS orders_by_time ON orders (created_at, seq);
"""
# Whole statements as constants: every value reaches SQLite as a ? parameter, never as SQL text.
_INSERT = "INSERT INTO orders (id, item, quantity, owner, created_at) VALUES (?, ?, ?, ?, ?)"
_SELECT_BY_ID = "SELECT id, item, quantity, owner, created_at FROM orders WHERE id = ?"
_SELECT_BY_OWNER = (
    "SELECT id, item, quantity, owner, created_at FROM orders WHERE owner = ?"
    " ORDER BY created_at DESC, seq DESC"
)
_SELECT_ALL = "SELECT id, item, quantity, owner, created_at FROM orders ORDER BY created_at DESC, seq DESC"

Row = tuple[str, str, int, str, str]


class OrderStore:
    """Orders in one SQLite file. Every call runs in a worker thread, one at a time."""

    def __init__(self, connection: sqlite3.Connection):
        self._connection = connection
        self._lock = threading.Lock()

    async def add(self, order: Order) -> None:
        """Save a new order."""
        await self._run(self._insert, order)

    async def get(self, order_id: str) -> Order | None:
        """The order with ``order_id``, whoever owns it."""
        row = await self._run(self._select_one, order_id)
        return None if row is None else _order(row)

    async def list_orders(self, owner: str | None) -> list[Order]:
        """``owner``'s orders, or everyone's when ``owner`` is None, newest first."""
        rows = await self._run(self._select_many, owner)
        return [_order(row) for row in rows]

    async def ping(self) -> bool:
        """True when the database answers a query."""
        try:
            await self._run(self._connection.execute, "SELECT 1")
        except (ServiceUnavailable, sqlite3.Error):
            return False
        return True

    def close(self) -> None:
        """Close the connection once the call in progress, if any, has finished."""
        with self._lock:
            self._connection.close()

    async def _run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        def locked() -> T:
            with self._lock:
                return function(*args, **kwargs)

        try:
            return await asyncio.to_thread(locked)
        except sqlite3.DatabaseError as exc:
            # Locked, read-only, full or failing disk: the dependency is down, not the request wrong.
            logger.error("order database error: %s", exc)
            raise ServiceUnavailable("the order database is unavailable") from None

    def _insert(self, order: Order) -> None:
        with self._connection:  # one transaction: committed, or rolled back on error
            self._connection.execute(
                _INSERT,
                (order.id, order.item, order.quantity, order.owner, format_timestamp(order.created_at)),
            )

    def _select_one(self, order_id: str) -> Row | None:
        row: Row | None = self._connection.execute(_SELECT_BY_ID, (order_id,)).fetchone()
        return row

    def _select_many(self, owner: str | None) -> list[Row]:
        if owner is None:
            cursor = self._connection.execute(_SELECT_ALL)
        else:
            cursor = self._connection.execute(_SELECT_BY_OWNER, (owner,))
        rows: list[Row] = cursor.fetchall()
        return rows


def _order(row: Row) -> Order:
    order_id, item, quantity, owner, created_at = row
    return Order(
        id=order_id, item=item, quantity=quantity, owner=owner, created_at=parse_timestamp(created_at)
    )


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: calls arrive from the thread pool, serialised by OrderStore's lock.
    connection = sqlite3.connect(path, check_same_thread=False)
    try:
        _set_up(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _set_up(connection: sqlite3.Connection) -> None:
    # Workers started together race to set up a new file, and SQLite answers "database is
    # locked" at once rather than waiting (about 1 start in 40 here). A worker that fails to
    # start stops the whole service (shared/workers.py), so the loser waits its turn instead.
    deadline = time.monotonic() + SETUP_TIMEOUT_SECONDS
    while True:
        try:
            # WAL lets a second worker process read while this one writes.
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            connection.executescript(_SCHEMA)
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    if mode != "wal":
        logger.warning("SQLite kept journal mode %s; WAL is not available here", mode)


@asynccontextmanager
async def open_order_store(path: Path) -> AsyncIterator[OrderStore]:
    """Open (creating if needed) the database at ``path``; closed on exit."""
    connection = await asyncio.to_thread(_connect, path)
    store = OrderStore(connection)
    try:
        yield store
    finally:
        await asyncio.to_thread(store.close)
