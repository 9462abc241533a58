"""Processes read from Linux ``/proc``: a process tree, and the TCP peers a process talks to."""

from __future__ import annotations

import os
from pathlib import Path

# The state column of /proc/net/tcp: 0A is LISTEN.
_TCP_LISTEN = "0A"


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


def tcp_remote_ports(pid: int) -> set[int]:
    """The remote ports of every TCP socket ``pid`` holds open (connected or connecting), IPv4 and IPv6.

    ``/proc/<pid>/net/tcp`` lists the whole network namespace, so a socket is the process's own
    only when its inode is among the process's file descriptors. A process that exits meanwhile
    holds nothing.
    """
    inodes: set[str] = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    except OSError:
        return set()
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # A listening socket's remote end is port 0; it connects to nothing.
            if fields[9] in inodes and fields[3] != _TCP_LISTEN:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports
