"""Polling with a deadline: how a test waits for an asynchronous outcome, never by sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    probe: Callable[[], T | None],
    *,
    within: float,
    what: str,
    until: Callable[[T], object] = bool,
    every: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``probe`` until what it returns passes ``until`` (is truthy, by default); return that.

    After ``within`` seconds this fails with an ``AssertionError`` naming ``what`` was awaited
    and the last value seen, or the last exception of a type in ``ignoring``: those count as
    "not yet", as when a server refuses connections while it starts.
    """
    deadline = time.monotonic() + within
    while True:
        last: object
        try:
            result = probe()
        except ignoring as error:
            last = error
        else:
            if result is not None and until(result):
                return result
            last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {within} s; last seen: {last!r}")
        time.sleep(every)
