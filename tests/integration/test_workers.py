"""A service with several workers, as ``<NAME>_WORKERS`` runs it: real processes on a real port.

Linux only (``/proc`` says which worker holds which connection), like the services' images.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from deploy.processes import free_port
from shared.runtime.workers import STALL_SECONDS
from tests.support.polling import poll

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc")

STARTUP_FAILURE = 3
CONNECTIONS = 32
TIMEOUT = 30.0


@dataclass
class Service:
    """orders under its own supervisor, with its output collected as it comes."""

    process: subprocess.Popen[bytes]
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> set[int]:
        """The supervisor's worker processes (multiprocessing may add a helper that never listens)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return {pid for pid in map(int, children.split()) if _listens(pid, self.port)}

    def log_records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]


def _start(tmp_path: Path, port: int, workers: int = 2) -> Service:
    env = {
        **os.environ,
        "ORDERS_HOST": "127.0.0.1",
        "ORDERS_PORT": str(port),
        "ORDERS_WORKERS": str(workers),
        "ORDERS_DB_PATH": str(tmp_path / "orders.db"),
        "JWKS_URL": f"http://127.0.0.1:{free_port()}/.well-known/jwks.json",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.orders"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    service = Service(process, port)
    threading.Thread(target=_collect, args=(process, service.lines), daemon=True).start()
    return service


def _collect(process: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert process.stderr is not None
    for raw in process.stderr:
        lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))


def _answers(service: Service) -> bool:
    try:
        return httpx.get(f"{service.url}/healthz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _tcp_inodes(port: int, state: str) -> set[str]:
    """Inodes of IPv4 TCP sockets on local ``port`` in ``state`` (01 established, 0A listening)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            inodes.add(fields[9])
    return inodes


def _listens(pid: int, port: int) -> bool:
    try:
        return bool(_socket_inodes(pid) & _tcp_inodes(port, "0A"))
    except OSError:
        return False


def _stop(service: Service) -> None:
    if service.process.poll() is None:
        os.killpg(service.process.pid, signal.SIGKILL)
        service.process.wait()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    started = _start(tmp_path, free_port())
    try:
        poll(
            lambda: _answers(started) and len(started.workers()) == 2,
            within=TIMEOUT,
            what="two workers to answer",
        )
        yield started
    finally:
        _stop(started)


def _open_connections(service: Service, count: int) -> list[socket.socket]:
    """``count`` keep-alive connections that arrive together while every worker is busy.

    The workers are paused meanwhile, so every connection is waiting when they resume: the
    moment a load generator opens its connections, or a burst reaches a loaded service.
    """
    workers = service.workers()
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        connections = [
            socket.create_connection(("127.0.0.1", service.port), timeout=TIMEOUT) for _ in range(count)
        ]
        for connection in connections:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: orders\r\n\r\n")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    for connection in connections:
        assert connection.recv(4096).startswith(b"HTTP/1.1 200")
    return connections


def test_connections_opened_together_are_spread_over_the_workers(service: Service) -> None:
    connections = _open_connections(service, CONNECTIONS)
    try:
        established = _tcp_inodes(service.port, "01")
        held = {pid: len(_socket_inodes(pid) & established) for pid in service.workers()}
    finally:
        for connection in connections:
            connection.close()

    assert sum(held.values()) == CONNECTIONS
    # With one shared socket the first worker to resume accepted all 32. The kernel's hash puts
    # fewer than 6 of 32 on one of two sockets about once in 10,000 runs.
    assert min(held.values()) >= 6, held


def test_each_worker_writes_the_services_json_logs(service: Service) -> None:
    connections = _open_connections(service, CONNECTIONS)
    for connection in connections:
        connection.close()

    def both_logged() -> bool:
        return {
            record["pid"] for record in service.log_records() if record.get("logger") == "shared.access"
        } >= service.workers()

    poll(both_logged, within=TIMEOUT, what="an access line from each worker")


def test_a_worker_that_dies_is_replaced(service: Service) -> None:
    victim = min(service.workers())
    os.kill(victim, signal.SIGKILL)

    poll(
        lambda: victim not in service.workers() and len(service.workers()) == 2,
        within=TIMEOUT,
        what="a new worker",
    )
    assert _answers(service)
    assert service.process.poll() is None


def test_a_worker_that_stops_answering_is_replaced(service: Service) -> None:
    victim = min(service.workers())
    os.kill(victim, signal.SIGSTOP)  # as stuck as an event loop blocked by a call that never returns
    stopped = time.monotonic()

    poll(
        lambda: victim not in service.workers() and len(service.workers()) == 2,
        within=TIMEOUT,
        what="a new worker",
    )
    assert time.monotonic() - stopped >= STALL_SECONDS - 2  # its last beat may be up to 2 s old
    poll(lambda: not Path(f"/proc/{victim}").exists(), within=TIMEOUT, what="the stuck worker to be gone")
    assert _answers(service)


def test_sigterm_to_the_supervisor_stops_every_worker(service: Service) -> None:
    workers = service.workers()
    service.process.send_signal(signal.SIGTERM)

    assert service.process.wait(timeout=TIMEOUT) == 0
    poll(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
        within=TIMEOUT,
        what="the workers to exit",
    )
    assert not _tcp_inodes(service.port, "0A")


def test_a_service_restarts_at_once_on_the_port_it_just_left(service: Service, tmp_path: Path) -> None:
    connections = _open_connections(service, CONNECTIONS)
    # Stopping closes the idle keep-alive connections from the server's side, which leaves them
    # in TIME_WAIT on the service's port for a minute.
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=TIMEOUT) == 0
    for connection in connections:
        connection.close()
    assert _tcp_inodes(service.port, "06"), "no connection lingers in TIME_WAIT"

    again = _start(tmp_path, service.port)
    try:
        poll(
            lambda: _answers(again) or again.process.poll() is not None,
            within=TIMEOUT,
            what="the new service",
        )
        assert again.process.poll() is None, again.lines[-3:]
    finally:
        _stop(again)


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "reuse-port"])
def test_a_port_another_program_holds_stops_the_service_at_start(tmp_path: Path, shared: bool) -> None:
    with socket.socket() as holder:
        # "reuse-port" is how another copy of this service holds it: it must not be joined.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(shared))
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        service = _start(tmp_path, holder.getsockname()[1])
        try:
            assert service.process.wait(timeout=TIMEOUT) == STARTUP_FAILURE
        finally:
            _stop(service)
    assert any("cannot listen" in str(record.get("msg")) for record in service.log_records())


def test_a_worker_that_cannot_start_stops_the_service(tmp_path: Path) -> None:
    (tmp_path / "orders.db").mkdir()  # the database path is a directory: every worker fails
    service = _start(tmp_path, free_port())
    try:
        assert service.process.wait(timeout=TIMEOUT) == STARTUP_FAILURE
    finally:
        _stop(service)
    assert not _tcp_inodes(service.port, "0A")
