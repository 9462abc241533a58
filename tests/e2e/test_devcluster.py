"""``python -m deploy.devcluster`` (``make run``): prefixed output, clean stops, no orphans."""

from __future__ import annotations

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

from deploy.devcluster import REPO_ROOT, SERVICES, Cluster, ClusterConfig
from deploy.redis_server import free_port

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
        found: set[int] = set()
        pending = [self.process.pid]
        while pending:
            pid = pending.pop()
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    kids = {int(kid) for kid in children.read_text().split()}
                except OSError:
                    continue
                pending.extend(kids - found)
                found |= kids
        return found


def _collect(stream: Iterator[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


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
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in children), "a child outlived make run"
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


def _service_environments(cluster: Cluster) -> dict[str, dict[str, str]]:
    """The real environment of each of the cluster's service processes, read from /proc."""
    environments: dict[str, dict[str, str]] = {}
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                raw = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
            for name in SERVICES:
                port = env.get(f"{name.upper()}_PORT")
                if f"services.{name}".encode() in argv and port == str(cluster.config.port(name)):
                    environments[name] = env
    return environments


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
