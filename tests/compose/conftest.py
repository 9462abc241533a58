"""The compose tier: the real compose.yaml, built and started once per run under a unique project.

The stack is driven with the ``docker compose`` CLI (build, up, down, re-create) and inspected and
faulted with the Docker SDK. Without a reachable engine, the Compose v2 plugin or the base images,
every test here skips and says why. Whatever the run started is removed when the tier is done, even
when a test or the start-up fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from deploy.processes import free_port
from services.auth.settings import DEMO_PASSWORD
from tests.support.http import SESSION_COOKIE, bearer, session_cookie
from tests.support.polling import poll

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
SERVICES = ("redis", "auth", "orders", "gateway")
ALICE = "alice@example.com"
ADMIN = "admin@example.com"
UP_TIMEOUT_SECONDS = 240
HEALTHY_TIMEOUT_SECONDS = 60
# The cold build and start-up are charged to whichever test comes first.
COMPOSE_TEST_TIMEOUT = pytest.mark.timeout(UP_TIMEOUT_SECONDS + 120)
UP_SECONDS = pytest.StashKey[float]()


class ComposeError(RuntimeError):
    """A ``docker compose`` command failed; the message holds its output."""


class ComposeStack:
    """One compose project of this repository's compose.yaml, on a free loopback port."""

    def __init__(self, client: Any, project: str, gateway_port: int):
        self.client = client
        self.project = project
        self.gateway_port = gateway_port
        self.url = f"http://127.0.0.1:{gateway_port}"
        self.public_origin = f"http://localhost:{gateway_port}"
        self.demo_password = DEMO_PASSWORD
        self.env = {
            key: value
            for key, value in os.environ.items()
            # The stack must be the documented default, whatever the caller's shell exports.
            if key not in ("APP_ENV", "DEMO_PASSWORD", "LOG_LEVEL", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME")
        }
        self.env["GATEWAY_PORT"] = str(gateway_port)

    def compose(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
        """Run ``docker compose -p PROJECT -f compose.yaml ARGS``; its output, or ComposeError."""
        command = ["docker", "compose", "--project-name", self.project, "--file", str(COMPOSE_FILE), *args]
        try:
            result = subprocess.run(
                command,
                cwd=REPO_ROOT,
                env=self.env if env is None else env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ComposeError(f"`docker compose {' '.join(args)}` took over {timeout:.0f} s") from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-6000:]
            raise ComposeError(f"`docker compose {' '.join(args)}` failed ({result.returncode}):\n{output}")
        return result.stdout

    def up(self) -> float:
        """Build and start the stack; the seconds until every service was healthy."""
        started = time.monotonic()
        try:
            self.compose(
                "up", "--build", "--detach", "--wait", "--wait-timeout", str(UP_TIMEOUT_SECONDS),
                timeout=UP_TIMEOUT_SECONDS + 60,
            )  # fmt: skip
        except ComposeError as exc:
            raise ComposeError(f"{exc}\n--- logs ---\n{self.logs()}") from None
        return time.monotonic() - started

    def down(self) -> None:
        """Remove the project's containers, networks, volumes and built images; never raises."""
        with contextlib.suppress(ComposeError):
            self.compose("down", "--volumes", "--remove-orphans", "--rmi", "local", "--timeout", "5")
        # Whatever `down` could not remove, by the project's label.
        label = f"com.docker.compose.project={self.project}"
        for container in self.client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True, v=True)
        for network in self.client.networks.list(filters={"label": label}):
            network.remove()
        for volume in self.client.volumes.list(filters={"label": label}):
            volume.remove(force=True)

    def logs(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail", "60", timeout=30)[-8000:]
        except ComposeError as exc:
            return str(exc)

    def container(self, service: str) -> Any:
        """The one running-or-stopped container of ``service``, fresh from the engine."""
        found = self.client.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={service}",
                ]
            },
        )
        assert len(found) == 1, f"expected one {service} container, found {len(found)}"
        return found[0]

    def network(self, name: str) -> Any:
        network = self.client.networks.get(f"{self.project}_{name}")
        network.reload()
        return network

    def volume(self, name: str) -> Any:
        return self.client.volumes.get(f"{self.project}_{name}")

    def wait_healthy(self, service: str, timeout: float = HEALTHY_TIMEOUT_SECONDS) -> None:
        """Poll Docker's health status of ``service`` until it is ``healthy``."""
        poll(
            lambda: self.container(service).attrs["State"],
            until=lambda state: state.get("Health", {}).get("Status") == "healthy",
            within=timeout,
            what=f"{service} to be healthy",
            every=0.2,
        )

    def exec(self, service: str, *argv: str) -> tuple[int, str]:
        """Run ``argv`` inside the service's container as its own user: exit code and output."""
        result = self.container(service).exec_run(list(argv))
        return result.exit_code, result.output.decode(errors="replace")


def _engine() -> Any:
    """A client for a reachable Docker engine with the Compose v2 CLI, or a skip saying what is missing."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine is reachable ({type(exc).__name__}: {exc})")
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not on PATH")
    version = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True, check=False
    )
    if version.returncode != 0:
        pytest.skip("the Docker Compose v2 CLI plugin (`docker compose`) is not installed")
    for variable, default in (("PYTHON_IMAGE", "python:3.12-slim"), ("REDIS_IMAGE", "redis:7-alpine")):
        image = os.environ.get(variable) or default
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.skip(
                f"base image {image} is not present: `docker pull {image}`, or set {variable} to a "
                "local image (the tests never pull)"
            )
    return client


@pytest.fixture(scope="package")
def stack(request: pytest.FixtureRequest) -> Iterator[ComposeStack]:
    """The whole cluster from compose.yaml, healthy, once per run; removed with its volumes after the tier.

    Package scope rather than session scope, so the containers are gone before other tiers run.
    """
    client = _engine()
    wheels = subprocess.run(["make", "wheels"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert wheels.returncode == 0, f"make wheels failed:\n{wheels.stdout[-3000:]}{wheels.stderr[-3000:]}"
    compose = ComposeStack(client, f"hybrid-auth-test-{uuid.uuid4().hex[:10]}", free_port())
    try:
        request.config.stash[UP_SECONDS] = compose.up()
        yield compose
    finally:
        compose.down()
        client.close()


@pytest.fixture
def gateway(stack: ComposeStack) -> Iterator[Gateway]:
    with httpx.Client(base_url=stack.url, timeout=10.0) as http:
        yield Gateway(stack, http)


@dataclass(frozen=True)
class LoggedIn:
    cookie: str
    csrf_token: str


class Gateway:
    """What a browser on the public origin sends to the published gateway.

    httpx keeps ``Secure`` cookies off plain http, so the session cookie is read from
    ``Set-Cookie`` and sent back by hand, with the Origin and CSRF token unsafe requests need.
    """

    def __init__(self, stack: ComposeStack, http: httpx.Client):
        self.stack = stack
        self.http = http

    def post_login(self, email: str = ALICE) -> httpx.Response:
        return self.http.post(
            "/auth/login",
            json={"email": email, "password": self.stack.demo_password},
            headers={"Origin": self.stack.public_origin},
        )

    def login(self, email: str = ALICE) -> LoggedIn:
        response = self.post_login(email)
        assert response.status_code == 200, response.text
        return LoggedIn(cookie=session_cookie(response).value, csrf_token=response.json()["csrf_token"])

    def cookie_headers(self, session: LoggedIn) -> dict[str, str]:
        return {
            "Cookie": f"{SESSION_COOKIE}={session.cookie}",
            "Origin": self.stack.public_origin,
            "X-CSRF-Token": session.csrf_token,
        }

    def request_token(self, session: LoggedIn) -> httpx.Response:
        return self.http.post(
            "/auth/token", json={"audience": "orders"}, headers=self.cookie_headers(session)
        )

    def token(self, session: LoggedIn) -> str:
        response = self.request_token(session)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def logout(self, session: LoggedIn) -> httpx.Response:
        return self.http.post("/auth/logout", headers=self.cookie_headers(session))

    def orders(self, token: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self.http.get("/api/orders", headers=bearer(token), params=params)

    def create_order(self, token: str, item: str) -> httpx.Response:
        return self.http.post("/api/orders", json={"item": item, "quantity": 1}, headers=bearer(token))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """One line saying how many compose tests ran, so a CI log shows the tier was not skipped."""
    outcomes: dict[str, str] = {}
    seconds = 0.0
    for reports in terminalreporter.stats.values():
        for report in reports:
            nodeid = getattr(report, "nodeid", "")
            if not nodeid.startswith("tests/compose/") or not hasattr(report, "when"):
                continue
            seconds += report.duration
            # A test counts once: failed or skipped in any phase wins over passed.
            if report.failed:
                outcomes[nodeid] = "failed"
            elif report.skipped and outcomes.get(nodeid) != "failed":
                outcomes[nodeid] = "skipped"
            elif report.passed and report.when == "call":
                outcomes.setdefault(nodeid, "passed")
    if not outcomes:
        return
    counts = {outcome: list(outcomes.values()).count(outcome) for outcome in ("passed", "failed", "skipped")}
    up_seconds = config.stash.get(UP_SECONDS, None)
    healthy = "" if up_seconds is None else f"; `up --build` to healthy in {up_seconds:.1f} s"
    terminalreporter.write_line(
        f"compose tier: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped in {seconds:.1f} s{healthy}"
    )
