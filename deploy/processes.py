"""Child processes that never outlive their parent, and free loopback ports to run them on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence

# PR_SET_PDEATHSIG makes the kernel send the child SIGTERM when its parent dies, so a SIGKILLed
# ``make run`` or test session leaves no server behind; the setting survives exec. A launcher sets
# it and then execs the real command: ``preexec_fn`` would run Python between fork and exec, which
# is unsafe once the parent has other threads (the cluster's output pumps). The launcher checks its
# parent afterwards, in case the parent died before the setting took effect.
_PARENT_DEATH_LAUNCHER = """\
import ctypes, os, signal, sys
parent, argv = int(sys.argv[1]), sys.argv[2:]
PR_SET_PDEATHSIG = 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM)) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
if os.getppid() != parent:
    sys.exit("the parent exited before this child started")
os.execvp(argv[0], argv)
"""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that, on Linux, the child gets SIGTERM when this process dies.

    The kernel ties the signal to the *thread* that starts the child, so start it from a thread
    that lives as long as the child should (the main thread, as the cluster and the tests do).
    Elsewhere ``argv`` is returned unchanged.
    """
    if sys.platform != "linux":
        return list(argv)
    return [sys.executable, "-c", _PARENT_DEATH_LAUNCHER, str(os.getpid()), *argv]


def live_pid(process: subprocess.Popen[bytes] | None) -> int | None:
    """The process id of ``process`` while it runs, else None."""
    return process.pid if process is not None and process.poll() is None else None
