"""Several orders workers opening one new SQLite file at the same moment, as the service starts them."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

from services.orders.store import _connect

# Without waiting for its turn, about 1 start in 40 failed with "database is locked" here, and
# the whole service stops when one worker fails to start: 200 starts would all pass
# by luck about once in 150 runs.
ROUNDS = 100


def _open(path: str, barrier: Barrier) -> None:
    barrier.wait()
    _connect(Path(path), None).close()


def test_workers_setting_up_a_new_database_together_all_start(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    failed = 0
    for number in range(ROUNDS):
        barrier = context.Barrier(2)
        path = str(tmp_path / f"orders-{number}.db")
        workers = [context.Process(target=_open, args=(path, barrier)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
            failed += worker.exitcode != 0
    assert failed == 0, f"{failed} of {2 * ROUNDS} workers failed to open the database"
