"""``python -m deploy.devcluster`` (``make run``): prefixed output, clean stops, no orphans."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy.devcluster import REPO_ROOT, SERVICES, Cluster, ClusterConfig, ClusterError
from deploy.processes import free_port
from tests.support.polling import poll
from tests.support.processes import descendants

pytestmark = pytest.mark.e2e

PORT_VARIABLES = ("GATEWAY_PORT", "AUTH_PORT", "ORDERS_PORT", "REDIS_PORT")


@dataclass
class Foreground:
    """``make run`` as a child of the test, with its output collected line by line."""

    process: subprocess.Popen[str]
    ports: dict[str, int]
    lines: list[str]

    def wait_for_line(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.lines[-30:])
                raise AssertionError(f"no line with {text!r} (exit status {self.process.poll()}):\n{tail}")
            time.sleep(0.05)

    def descendants(self) -> set[int]:
        """Every process below this one, from /proc."""
        return descendants(self.process.pid)


def _collect(stream: Iterator[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, parent, process group, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _gone(pid: int) -> bool:
    try:
        state = _stat(pid)[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def _wait_until_gone(pids: set[int], timeout: float = 10.0) -> dict[int, bytes]:
    """Those of ``pids`` still running after ``timeout`` seconds, with their command lines."""
    deadline = time.monotonic() + timeout
    while (left := {pid for pid in pids if not _gone(pid)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {pid: b" ".join(_cmdline(pid)) for pid in left}


def _kill_all(pids: set[int]) -> None:
    """Clean up after a failed test, so no orphan outlives it."""
    for pid in pids:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def _process_group(group: int) -> set[int]:
    """The running members of a process group, from /proc."""
    members: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, _parent, member_of = _stat(int(entry.name))[:3]
            except (OSError, IndexError):
                continue
            if int(member_of) == group and state != "Z":
                members.add(int(entry.name))
    return members


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


@pytest.fixture
def foreground(tmp_path: Path) -> Iterator[Foreground]:
    ports = {name: free_port() for name in PORT_VARIABLES}
    env = {
        **{key: value for key, value in os.environ.items() if key not in PORT_VARIABLES},
        **{name: str(port) for name, port in ports.items()},
        "VAR_DIR": str(tmp_path / "var"),
    }
    # A session of its own, like a shell's foreground job, so a Ctrl-C can go to the group.
    # SIGINT starts ignored, as in a job a shell puts in the background: Ctrl-C must work anyway.
    process = subprocess.Popen(
        ["bash", "-c", 'trap "" INT; exec "$0" -m deploy.devcluster', sys.executable],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=_collect, args=(process.stdout, lines), daemon=True)
    reader.start()
    running = Foreground(process, ports, lines)
    try:
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            for pid in running.descendants():
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)
        reader.join(timeout=5)


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(lambda pid: os.kill(pid, signal.SIGTERM), id="SIGTERM"),
        pytest.param(lambda pid: os.killpg(pid, signal.SIGINT), id="Ctrl-C"),
    ],
)
def test_make_run_serves_prefixed_output_and_stops_cleanly(
    foreground: Foreground, stop: Callable[[int], None]
) -> None:
    gateway_port = foreground.ports["GATEWAY_PORT"]
    foreground.wait_for_line(f"http://localhost:{gateway_port}")
    foreground.wait_for_line("alice@example.com")
    children = foreground.descendants()
    health = httpx.get(f"http://127.0.0.1:{gateway_port}/healthz", timeout=5)

    stop(foreground.process.pid)
    status = foreground.process.wait(timeout=60)

    assert health.status_code == 200
    assert status == 0, "\n".join(foreground.lines[-30:])
    for name in ("auth", "orders", "gateway"):
        assert any(line.startswith(f"{name:<8}| ") for line in foreground.lines), name
    assert len(children) == 4, children  # redis, auth, orders, gateway
    assert not _wait_until_gone(children), "a child outlived make run"
    assert not any(_listening(port) for port in foreground.ports.values())


def test_a_sigkilled_make_run_takes_its_children_with_it(foreground: Foreground) -> None:
    foreground.wait_for_line(f"http://localhost:{foreground.ports['GATEWAY_PORT']}")
    children = foreground.descendants()
    assert len(children) == 4, children  # redis, auth, orders, gateway

    try:
        foreground.process.kill()
        foreground.process.wait(timeout=10)
        survivors = _wait_until_gone(children)
    finally:
        _kill_all(children)

    assert not survivors, survivors
    assert not any(_listening(port) for port in foreground.ports.values())


def test_make_run_stops_everything_and_fails_when_a_child_dies(foreground: Foreground) -> None:
    foreground.wait_for_line(f"http://localhost:{foreground.ports['GATEWAY_PORT']}")
    children = foreground.descendants()
    orders = [pid for pid in children if b"services.orders" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(orders) == 1, children

    os.kill(orders[0], signal.SIGKILL)
    status = foreground.process.wait(timeout=60)

    assert status != 0
    assert any("orders exited unexpectedly" in line for line in foreground.lines), foreground.lines[-10:]
    assert all(_gone(pid) for pid in children)
    assert not any(_listening(port) for port in foreground.ports.values())


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def _service_environments(cluster: Cluster) -> dict[str, dict[str, str]]:
    """The real environment of each of the cluster's service processes, read from /proc."""
    environments: dict[str, dict[str, str]] = {}
    for name in SERVICES:
        pid = cluster.pid(name)
        assert pid is not None, f"{name} is not running"
        environments[name] = _environ(pid)
    return environments


def test_every_child_runs_in_a_session_of_its_own(cluster: Cluster) -> None:
    # A terminal's Ctrl-C then reaches make run alone, which stops Redis after the services.
    pids = {name: cluster.pid(name) for name in ("redis", *SERVICES)}
    sessions = {name: os.getsid(pid) for name, pid in pids.items() if pid is not None}

    assert sessions == pids


def test_a_redis_that_cannot_start_is_reported_with_its_own_complaint(tmp_path: Path) -> None:
    cluster = Cluster(ClusterConfig.on_free_ports(tmp_path))
    manifest = cluster.redis.data_dir / "appendonlydir" / "appendonly.aof.manifest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("not a manifest\n")

    try:
        with pytest.raises(ClusterError) as failure:
            cluster.start_service("redis")
    finally:
        cluster.stop()

    assert "Invalid AOF manifest file format" in str(failure.value)
    assert not cluster.running("redis")


def _workers(supervisor: int, timeout: float = 20.0) -> set[int]:
    """The worker processes under ``supervisor``, once there are two of them."""

    def two_or_more() -> set[int] | None:
        workers = {pid for pid in _process_group(supervisor) if b"spawn_main" in b" ".join(_cmdline(pid))}
        return workers if len(workers) >= 2 else None

    return poll(two_or_more, within=timeout, what=f"{supervisor} starting two workers")


def _freeze_a_worker(supervisor: int, workers: set[int]) -> None:
    os.kill(min(workers), signal.SIGSTOP)


def _kill_the_supervisor(supervisor: int, workers: set[int]) -> None:
    os.kill(supervisor, signal.SIGKILL)


@pytest.mark.parametrize("mishap", [_freeze_a_worker, _kill_the_supervisor])
def test_stopping_a_service_with_several_workers_leaves_none_of_them(
    tmp_path: Path, mishap: Callable[[int, set[int]], None]
) -> None:
    config = ClusterConfig.on_free_ports(tmp_path, env={"ORDERS_WORKERS": "2"})
    cluster = Cluster(dataclasses.replace(config, stop_timeout=1.0))
    group: set[int] = set()
    try:
        cluster.prepare()
        for name in ("redis", "auth", "orders"):
            cluster.start_service(name)
        supervisor = cluster.pid("orders")
        assert supervisor is not None
        workers = _workers(supervisor)
        # Also multiprocessing's resource tracker, which ignores SIGTERM.
        group = _process_group(supervisor)
        mishap(supervisor, workers)
        cluster.stop()
        survivors = _wait_until_gone(group)
    finally:
        cluster.stop()
        _kill_all(group)

    assert {supervisor, *workers} <= group
    assert not survivors, survivors
    assert not _listening(cluster.config.orders_port)


def test_only_auth_is_given_redis_keys_and_secrets(cluster: Cluster) -> None:
    environments = _service_environments(cluster)

    assert set(environments) == set(SERVICES)
    auth = environments["auth"]
    assert auth["REDIS_URL"] == cluster.service_url("redis")
    assert auth["AUTH_KEYS_DIR"] == str(cluster.keys_dir)
    assert auth["SESSION_SECRET_FILE"] == str(cluster.session_secret_file)
    for name in ("orders", "gateway"):
        leaked = {"REDIS_URL", "AUTH_KEYS_DIR", "SESSION_SECRET", "SESSION_SECRET_FILE", "DEMO_PASSWORD"}
        assert not leaked & set(environments[name]), name
    for env in environments.values():
        assert env["APP_ENV"] == "dev"
        assert env["TOKEN_ISSUER"] == cluster.public_origin
        assert env["JWKS_URL"] == f"{cluster.service_url('auth')}/.well-known/jwks.json"
    assert environments["orders"]["ORDERS_DB_PATH"] == str(cluster.orders_db_path)
    assert environments["gateway"]["ORDERS_URL"] == cluster.service_url("orders")


def test_a_redis_url_in_the_callers_environment_reaches_no_service_but_auth(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere.invalid:6379/0")
    monkeypatch.setenv("SESSION_SECRET", "inherited-secret-that-must-not-spread")

    environments = {name: cluster.env_for(name) for name in SERVICES}

    assert environments["auth"]["REDIS_URL"] == cluster.service_url("redis")
    assert "SESSION_SECRET" not in environments["auth"]
    for name in ("orders", "gateway"):
        assert "REDIS_URL" not in environments[name]
        assert "SESSION_SECRET" not in environments[name]


def test_worker_counts_from_the_callers_environment_reach_the_services(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A knob for trying a service with several workers under make run, not cluster wiring.
    monkeypatch.setenv("ORDERS_WORKERS", "3")

    assert cluster.env_for("orders")["ORDERS_WORKERS"] == "3"


def test_the_session_secret_is_private_and_survives_a_restart(cluster: Cluster) -> None:
    mode = cluster.session_secret_file.stat().st_mode & 0o777
    before = cluster.session_secret_file.read_text()

    cluster.start()

    assert mode == 0o600
    assert len(before.strip()) >= 64
    assert cluster.session_secret_file.read_text() == before


def test_demo_users_can_log_in_as_soon_as_auth_reports_ready(tmp_path: Path) -> None:
    # Ready means usable: make run prints the demo logins the moment the services are ready.
    cluster = Cluster(ClusterConfig.on_free_ports(tmp_path / "fresh"))
    try:
        cluster.prepare()
        cluster.start_service("redis")
        cluster.start_service("auth")
        response = httpx.post(
            f"{cluster.service_url('auth')}/login",
            json={"email": "alice@example.com", "password": cluster.demo_password},
            headers={"Origin": cluster.public_origin},
        )
    finally:
        cluster.stop()

    assert response.status_code == 200, response.text
