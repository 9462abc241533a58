"""CPU time of a service's processes, read from Linux ``/proc``: the bench's steadier figure.

Throughput on a shared 2-core machine moves with whatever else runs; the CPU a service spends
per request moves much less, so the bench reports both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu_seconds(group: int, proc: Path = _PROC) -> float:
    """User plus system CPU seconds of every live process in process group ``group``.

    The group, because a service with workers is a supervisor and its children, all in the group
    the cluster started it in. The reaped children's time (``cutime``, ``cstime``) counts too,
    so a worker that exits inside a window is not lost. 0.0 where there is no ``/proc``.
    """
    total_ticks = 0
    try:
        entries = list(os.scandir(proc))
    except OSError:
        return 0.0
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone since the listing
        # The command name is in parentheses and may hold spaces: split after its last ")".
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is field 3 of proc(5): pgrp is field 5, utime..cstime are fields 14..17.
        if int(fields[2]) == group:
            total_ticks += sum(int(value) for value in fields[11:15])
    return total_ticks / _TICKS_PER_SECOND


def snapshot(groups: Mapping[str, int | None], proc: Path = _PROC) -> dict[str, float]:
    """CPU seconds so far of each named process group; a service not running is left out."""
    return {name: group_cpu_seconds(group, proc) for name, group in groups.items() if group is not None}


def per_request_us(
    before: Mapping[str, float], after: Mapping[str, float], requests: int
) -> dict[str, float]:
    """Microseconds of CPU per request, per service, spent between two snapshots."""
    if requests <= 0:
        return {}
    return {name: (after[name] - before[name]) * 1e6 / requests for name in after.keys() & before.keys()}
