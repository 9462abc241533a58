"""Several worker processes for one service, each accepting on its own socket.

uvicorn's ``workers=`` shares one listening socket between its processes, and the worker that
wakes first accepts every connection waiting. A client that opens a few keep-alive connections
at once (a load generator, another proxy's warmed pool) had all of them on one worker while the
other sat idle: 1.00 and 0.00 cores under wrk. Here each worker binds its own socket to the
same port with ``SO_REUSEPORT``, and the kernel spreads new connections over them. Each worker
also sets up the service's JSON logging, which uvicorn's spawned workers never did (their access
lines were lost).

The supervisor replaces a worker that dies or whose event loop stops turning (it beats through
uvicorn's notify hook; no beat for ``STALL_SECONDS`` and it is killed), and stops them all if
one fails to start: a worker that cannot load the app or bind the port would fail the same way
every time.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
import time
from ctypes import c_double
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from shared.core.logs import configure_logging

logger = logging.getLogger("shared.runtime.workers")

# How long a worker is given to finish its requests after SIGTERM, beyond uvicorn's own
# graceful-shutdown timeout, before it is killed.
_STOP_MARGIN_SECONDS = 5.0
_WATCH_SECONDS = 0.5
_BEAT_SECONDS = 1
#: A worker whose event loop has not beaten for this long is stuck (a blocking call on the loop,
#: a stopped process) and is replaced; a healthy one beats every second or two.
STALL_SECONDS = 10.0


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` in the port's ``SO_REUSEPORT`` group, not yet listening."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _run_worker(config: uvicorn.Config, service: str, log_level: str, heartbeat: c_double) -> None:
    configure_logging(service, log_level)

    async def beat() -> None:
        heartbeat.value = time.monotonic()

    # uvicorn calls this from its main loop, the same loop that serves requests.
    config.callback_notify = beat
    config.timeout_notify = _BEAT_SECONDS
    try:
        sock = _reuse_port_socket(config.host, config.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror)
        sys.exit(STARTUP_FAILURE)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


@dataclass
class _Worker:
    process: BaseProcess
    # CLOCK_MONOTONIC of the worker's last beat (one clock for every process); 0 until it serves.
    heartbeat: c_double

    def stalled(self, now: float) -> bool:
        last = self.heartbeat.value
        return last > 0 and now - last > STALL_SECONDS


class Workers:
    """``count`` processes serving ``config`` on one port, kept running until SIGTERM or SIGINT."""

    def __init__(self, config: uvicorn.Config, count: int, *, service: str, log_level: str):
        self.config = config
        self.count = count
        self.service = service
        self.log_level = log_level
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._stopping = threading.Event()

    def run(self) -> int:
        """Serve until told to stop; the exit status for the supervisor's own process."""
        try:
            # An ordinary bind first: SO_REUSEPORT alone would let a second copy of this service,
            # started by mistake, quietly take a share of the first one's connections.
            with socket.socket(_family(self.config.host)) as probe:
                # Connections the last run closed may linger in TIME_WAIT; they hold nothing.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((self.config.host, self.config.port))
                self.config.port = probe.getsockname()[1]
            # The supervisor's own socket then holds the port for the group; it never listens, so
            # it is never handed a connection.
            reserved = _reuse_port_socket(self.config.host, self.config.port)
        except OSError as exc:
            logger.error("cannot listen on %s:%d: %s", self.config.host, self.config.port, exc.strerror)
            return STARTUP_FAILURE
        with reserved:
            for stop_signal in (signal.SIGTERM, signal.SIGINT):
                signal.signal(stop_signal, self._stop)
            logger.info("serving on %s:%d with %d workers", self.config.host, self.config.port, self.count)
            self._workers = [self._start() for _ in range(self.count)]
            try:
                return self._watch()
            finally:
                self._stop_all()

    def _start(self) -> _Worker:
        heartbeat = self._context.Value("d", 0.0, lock=False)
        process = self._context.Process(
            target=_run_worker,
            args=(self.config, self.service, self.log_level, heartbeat),
            name=f"{self.service}-worker",
        )
        process.start()
        return _Worker(process, heartbeat)

    def _watch(self) -> int:
        while not self._stopping.wait(_WATCH_SECONDS):
            for index, worker in enumerate(self._workers):
                process = worker.process
                if process.is_alive():
                    if not worker.stalled(time.monotonic()):
                        continue
                    logger.error("worker %s stopped answering; replacing it", process.pid)
                    process.kill()
                    process.join()
                elif process.exitcode == STARTUP_FAILURE:
                    logger.error("worker %s failed to start; stopping the others", process.pid)
                    return STARTUP_FAILURE
                else:
                    logger.warning(
                        "worker %s exited with %s; starting another", process.pid, process.exitcode
                    )
                self._workers[index] = self._start()
        return 0

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()

    def _stop_all(self) -> None:
        processes = [worker.process for worker in self._workers]
        for process in processes:
            if process.is_alive():
                process.terminate()
        grace = (self.config.timeout_graceful_shutdown or 0) + _STOP_MARGIN_SECONDS
        deadline = time.monotonic() + grace
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.warning("worker %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
