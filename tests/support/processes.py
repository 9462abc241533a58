"""Process trees read from Linux ``/proc``: what a test must find stopped after it stops a service."""

from __future__ import annotations

from pathlib import Path


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, at any depth; one that exits meanwhile is skipped."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        for children in Path(f"/proc/{pending.pop()}/task").glob("*/children"):
            try:
                kids = {int(kid) for kid in children.read_text().split()}
            except OSError:
                continue
            pending.extend(kids - found)
            found |= kids
    return found
