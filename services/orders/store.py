"""SQLite storage for orders: writes off the event loop behind a lock, short indexed reads inline.

Two connections per process. A write (one INSERT, committed and so synced to disk) runs in a
worker thread, one at a time, so the event loop never waits for the disk. A read is one indexed
query bounded by the page size: tens of microseconds, less than the thread hop that would carry
it, so it runs on the event loop itself. In WAL mode a reader never waits for a writer, and the
reader has its own connection, so a read never waits for the write lock either.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

from services.orders.domain import Order, OrderDocument, format_timestamp
from services.orders.paging import CURSOR_KEY_BYTES, Position
from shared.core import ServiceUnavailable
from shared.web import Tracing, TracingSettings

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SETUP_TIMEOUT_SECONDS = 10.0
# How long an inline read may wait on SQLite's own locks (only another process's WAL recovery
# or checkpoint takes them from a reader) before the request is a 503: the loop waits meanwhile.
READ_BUSY_TIMEOUT_SECONDS = 0.1

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
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
"""
# The key that signs listing cursors lives with the data: every worker and every restart on the
# same file signs and checks with the same key, and nobody has to configure a secret for it.
_INSERT_CURSOR_KEY = "INSERT OR IGNORE INTO settings (name, value) VALUES ('cursor_key', ?)"
_SELECT_CURSOR_KEY = "SELECT value FROM settings WHERE name = 'cursor_key'"
# Whole statements as constants: every value reaches SQLite as a ? parameter, never as SQL text.
# The quota is checked inside the INSERT: one statement is atomic, across worker processes too.
_INSERT_WITHIN_QUOTA = (
    "INSERT INTO orders (id, item, quantity, owner, created_at) SELECT ?, ?, ?, ?, ?"
    " WHERE (SELECT count(*) FROM orders WHERE owner = ?) < ?"
)
_COLUMNS = "SELECT id, item, quantity, owner, created_at FROM orders"
_NEWEST_FIRST = " ORDER BY created_at DESC, seq DESC LIMIT ?"
# The rows after a position: before (created_at, seq) of the order the cursor names. A cursor
# carries that order's id, never its seq, so clients never learn row numbers.
_BEFORE = " (created_at, seq) < (?, (SELECT seq FROM orders WHERE id = ?))"
_SELECT_BY_ID = f"{_COLUMNS} WHERE id = ?"
_SELECT_BY_OWNER = f"{_COLUMNS} WHERE owner = ?{_NEWEST_FIRST}"
_SELECT_BY_OWNER_AFTER = f"{_COLUMNS} WHERE owner = ? AND{_BEFORE}{_NEWEST_FIRST}"
_SELECT_ALL = f"{_COLUMNS}{_NEWEST_FIRST}"
_SELECT_ALL_AFTER = f"{_COLUMNS} WHERE{_BEFORE}{_NEWEST_FIRST}"

Row = tuple[str, str, int, str, str]


class OrderStore:
    """Orders in one SQLite file: writes in a worker thread one at a time, reads inline."""

    def __init__(
        self,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        cursor_key: bytes,
        tracing: Tracing | None = None,
    ):
        self._writer = writer
        self._reader = reader
        self._lock = threading.Lock()
        self.cursor_key = cursor_key
        self._tracing = tracing or Tracing(TracingSettings(), "orders")

    async def add(self, order: Order, *, max_per_owner: int) -> bool:
        """Save a new order; False, saving nothing, when its owner already holds ``max_per_owner``."""
        with self._tracing.span(*_statement_span(_INSERT_WITHIN_QUOTA), kind="client"):
            return await self._write(self._insert, order, max_per_owner)

    def get(self, order_id: str) -> OrderDocument | None:
        """The order with ``order_id``, whoever owns it."""
        row: Row | None = self._read(_SELECT_BY_ID, (order_id,)).fetchone()
        return None if row is None else OrderDocument(*row)

    def page(self, owner: str | None, *, limit: int, after: Position | None) -> list[OrderDocument]:
        """Up to ``limit`` of ``owner``'s orders (everyone's when None), newest first, after ``after``."""
        parameters: tuple[object, ...] = (limit,)
        if after is not None:
            parameters = (after.created_at, after.order_id, limit)
        if owner is not None:
            parameters = (owner, *parameters)
        query = {
            (False, False): _SELECT_ALL,
            (False, True): _SELECT_ALL_AFTER,
            (True, False): _SELECT_BY_OWNER,
            (True, True): _SELECT_BY_OWNER_AFTER,
        }[owner is not None, after is not None]
        rows: list[Row] = self._read(query, parameters).fetchall()
        return [OrderDocument(*row) for row in rows]

    def ping(self) -> bool:
        """True when the database answers a query."""
        try:
            self._read("SELECT 1", ())
        except (ServiceUnavailable, sqlite3.Error):
            return False
        return True

    def close(self) -> None:
        """Close both connections once the write in progress, if any, has finished."""
        with self._lock:
            self._writer.close()
            self._reader.close()

    def _read(self, query: str, parameters: tuple[object, ...]) -> sqlite3.Cursor:
        try:
            with self._tracing.span(*_statement_span(query), kind="client"):
                return self._reader.execute(query, parameters)
        except sqlite3.DatabaseError as exc:
            logger.error("order database error: %s", exc)
            raise ServiceUnavailable("the order database is unavailable") from None

    async def _write(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        def locked() -> T:
            with self._lock:
                return function(*args, **kwargs)

        try:
            return await asyncio.to_thread(locked)
        except sqlite3.DatabaseError as exc:
            # Locked, read-only, full or failing disk: the dependency is down, not the request wrong.
            logger.error("order database error: %s", exc)
            raise ServiceUnavailable("the order database is unavailable") from None

    def _insert(self, order: Order, max_per_owner: int) -> bool:
        created_at = format_timestamp(order.created_at)
        with self._writer:  # one transaction: committed, or rolled back on error
            cursor = self._writer.execute(
                _INSERT_WITHIN_QUOTA,
                (order.id, order.item, order.quantity, order.owner, created_at, order.owner, max_per_owner),
            )
        return cursor.rowcount == 1


@functools.cache
def _statement_span(query: str) -> tuple[str, dict[str, str]]:
    """A statement's span name and attributes; its text holds ``?`` where values go, never a value."""
    operation = query.split(" ", 1)[0]
    return f"sqlite {operation}", {
        "db.system.name": "sqlite",
        "db.operation.name": operation,
        "db.query.text": query,
    }


def _connect(path: Path, tracing: Tracing | None) -> OrderStore:
    path.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: writes arrive from the thread pool, serialised by OrderStore's
    # lock, and the reader is opened in this thread but used on the event loop's.
    writer = sqlite3.connect(path, check_same_thread=False)
    try:
        cursor_key = _set_up(writer)
        reader = sqlite3.connect(path, check_same_thread=False, timeout=READ_BUSY_TIMEOUT_SECONDS)
    except BaseException:
        writer.close()
        raise
    # The reader cannot write, whatever a future bug asks of it.
    reader.execute("PRAGMA query_only = ON")
    return OrderStore(writer, reader, cursor_key, tracing)


def _set_up(connection: sqlite3.Connection) -> bytes:
    # Workers started together race to set up a new file, and SQLite answers "database is
    # locked" at once rather than waiting (about 1 start in 40 here). A worker that fails to
    # start stops the whole service (shared/runtime/workers.py), so the loser waits its turn instead.
    deadline = time.monotonic() + SETUP_TIMEOUT_SECONDS
    while True:
        try:
            # WAL lets a second worker process read while this one writes.
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            connection.executescript(_SCHEMA)
            with connection:
                # The first worker to get here makes the key; the others read that one back.
                connection.execute(_INSERT_CURSOR_KEY, (secrets.token_bytes(CURSOR_KEY_BYTES),))
            cursor_key: bytes = connection.execute(_SELECT_CURSOR_KEY).fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    if mode != "wal":
        logger.warning("SQLite kept journal mode %s; WAL is not available here", mode)
    return cursor_key


@asynccontextmanager
async def open_order_store(path: Path, tracing: Tracing | None = None) -> AsyncIterator[OrderStore]:
    """Open (creating if needed) the database at ``path``, traced by ``tracing``; closed on exit."""
    store = await asyncio.to_thread(_connect, path, tracing)
    try:
        yield store
    finally:
        await asyncio.to_thread(store.close)
