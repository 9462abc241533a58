"""Two auth replicas behind the gateway: one session and one key set everywhere, and a replica's death
costs no request once the gateway has taken it out of rotation."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.devcluster import REPO_ROOT, Cluster
from deploy.processes import free_port
from services.auth.settings import DEMO_PASSWORD
from tests.support.cluster import ALICE, Browser, ClusterFactory, LoggedIn, Secrets
from tests.support.http import SESSION_COOKIE, session_cookie
from tests.support.polling import poll

pytestmark = pytest.mark.e2e

ENV = {
    # Short, so a replica that comes back is in rotation again within a second.
    "UPSTREAM_HEALTH_INTERVAL_SECONDS": "0.5",
    "KEYS_RELOAD_SECONDS": "0.2",
    # The traffic loop mints a token per round, far above the per-session budget meant for browsers.
    "TOKEN_RATE_LIMIT": "1000000",
}
VICTIM = "auth-2"


@pytest.fixture(scope="module")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    with cluster_factory("replicas", ENV, auth_replicas=2) as started:
        yield started


class Replica:
    """Auth replica ``name`` addressed directly, as a browser on the public origin would talk to it."""

    def __init__(self, cluster: Cluster, name: str, secrets: Secrets):
        self.cluster = cluster
        self.name = name
        self.secrets = secrets
        self.url = cluster.service_url(name)

    def login(self, email: str = ALICE) -> LoggedIn:
        password = self.cluster.demo_password
        response = httpx.post(
            f"{self.url}/login",
            json={"email": email, "password": password},
            headers={"Origin": self.cluster.public_origin},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        cookie = session_cookie(response).value
        self.secrets.add(cookie)
        self.secrets.add(body["csrf_token"])
        return LoggedIn(email=email, cookie=cookie, csrf_token=body["csrf_token"], user=body["user"])

    def post(self, path: str, session: LoggedIn, **kwargs: Any) -> httpx.Response:
        headers = {
            "Cookie": f"{SESSION_COOKIE}={session.cookie}",
            "Origin": self.cluster.public_origin,
            "X-CSRF-Token": session.csrf_token,
        }
        return httpx.post(f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def mint(self, session: LoggedIn) -> httpx.Response:
        response = self.post("/token", session, json={"audience": "orders"})
        if response.status_code == 200:
            self.secrets.add(response.json()["access_token"])
        return response

    def kids(self) -> set[str]:
        response = httpx.get(f"{self.url}/.well-known/jwks.json", timeout=5)
        assert response.status_code == 200, response.text
        return {entry["kid"] for entry in response.json()["keys"]}

    def tokens_signed(self) -> float:
        """``auth_tokens_signed_total`` from the replica's own /metrics; it restarts at 0 with the process."""
        for line in httpx.get(f"{self.url}/metrics", timeout=5).text.splitlines():
            if line.startswith("auth_tokens_signed_total "):
                return float(line.split()[1])
        raise AssertionError(f"{self.name} has no auth_tokens_signed_total")


@pytest.fixture
def replicas(cluster: Cluster, secrets_seen: Secrets) -> tuple[Replica, Replica]:
    one, two = (Replica(cluster, name, secrets_seen) for name in cluster.auth_replicas)
    return one, two


def test_a_session_from_one_replica_mints_on_the_other_and_logout_on_either_ends_it(
    replicas: tuple[Replica, Replica],
) -> None:
    one, two = replicas
    session = one.login()

    minted = two.mint(session)
    logged_out = one.post("/logout", session)
    refused = two.mint(session)

    assert minted.status_code == 200, minted.text
    assert logged_out.status_code == 200, logged_out.text
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "no_session"


def test_a_key_rotated_with_the_cli_is_published_by_both_replicas(
    cluster: Cluster, replicas: tuple[Replica, Replica]
) -> None:
    before = {path.stem for path in cluster.keys_dir.glob("*.pem")}
    result = cluster.auth_cli("keys", "rotate")
    assert result.returncode == 0, result.stderr
    (kid,) = {path.stem for path in cluster.keys_dir.glob("*.pem")} - before

    poll(lambda: all(kid in replica.kids() for replica in replicas), within=10, what=f"both publishing {kid}")
    assert replicas[0].kids() == replicas[1].kids()


def test_the_gateway_spreads_traffic_over_both_replicas(
    browser: Browser, replicas: tuple[Replica, Replica]
) -> None:
    before = [replica.tokens_signed() for replica in replicas]
    session = browser.login(ALICE)

    for _ in range(10):
        browser.token(session)

    grown = [replica.tokens_signed() - start for replica, start in zip(replicas, before, strict=True)]
    # Round robin: logins and other requests share the rotation, so only roughly half each.
    assert sum(grown) == 10
    assert min(grown) >= 3, grown


def served(cluster: Cluster, name: str) -> int:
    """How many user requests (not probes) replica ``name`` has logged, across its restarts."""
    count = 0
    for line in cluster.output(name):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("logger") == "shared.access" and entry.get("msg", "").startswith(
            ("GET /me ", "POST /token ")
        ):
            count += 1
    return count


def gateway_health(cluster: Cluster, name: str) -> bool:
    """Whether the gateway has replica ``name`` in rotation, from its /readyz detail."""
    url = cluster.service_url(name)
    checks = httpx.get(f"{cluster.url}/readyz", timeout=5).json()["checks"]
    (member,) = [member for member in checks["upstreams"]["auth"]["members"] if member["url"] == url]
    healthy: bool = member["healthy"]
    return healthy


def gateway_retries(cluster: Cluster) -> float:
    total = 0.0
    for line in httpx.get(f"{cluster.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("gateway_upstream_retries_total{") and 'upstream="auth"' in line:
            total += float(line.split()[-1])
    return total


@dataclass(frozen=True)
class Outcome:
    started: float
    what: str
    status: int
    detail: str


@dataclass
class Traffic:
    """Clients reading ``/auth/me`` and minting through the gateway until stopped, each with a session."""

    cluster: Cluster
    secrets: Secrets
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, session: LoggedIn) -> None:
        with httpx.Client(base_url=self.cluster.url, timeout=10.0) as client:
            browser = Browser(self.cluster, client, self.secrets)
            cookie = {"Cookie": f"{SESSION_COOKIE}={session.cookie}"}
            while not self.stop.is_set():
                self._send("GET /auth/me", lambda: client.get("/auth/me", headers=cookie))
                self._send("POST /auth/token", lambda: browser.request_token(session))

    def _send(self, what: str, send: Callable[[], httpx.Response]) -> None:
        started = time.monotonic()
        try:
            response = send()
            status, detail = response.status_code, response.text[:200]
        except httpx.HTTPError as exc:
            status, detail = 0, type(exc).__name__
        with self.lock:
            self.outcomes.append(Outcome(started, what, status, detail))

    def count_since(self, moment: float) -> int:
        with self.lock:
            return sum(outcome.started >= moment for outcome in self.outcomes)

    def failures(self) -> list[Outcome]:
        with self.lock:
            return [outcome for outcome in self.outcomes if outcome.status != 200]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_replica_killed_mid_traffic_fails_no_request_once_marked_down_and_rejoins_after_restart(
    cluster: Cluster, browser: Browser, secrets_seen: Secrets, signum: signal.Signals
) -> None:
    traffic = Traffic(cluster, secrets_seen)
    # Logged in before the kill, so the loop only reads and mints.
    workers = [
        threading.Thread(target=traffic.run, args=(browser.login(ALICE),), name=f"traffic-{i}")
        for i in range(2)
    ]
    retries_before = gateway_retries(cluster)
    before = served(cluster, VICTIM)
    for worker in workers:
        worker.start()
    try:
        poll(lambda: served(cluster, VICTIM) >= before + 10, within=20, what=f"{VICTIM} serving traffic")
        pid = cluster.pid(VICTIM)
        assert pid is not None
        killed_at = time.monotonic()
        os.kill(pid, signum)
        poll(
            lambda: not gateway_health(cluster, VICTIM),
            within=10,
            what="the gateway marking it down",
            every=0.01,
        )
        marked_at = time.monotonic()
        poll(lambda: not cluster.running(VICTIM), within=15, what=f"{VICTIM} exiting")
        poll(lambda: traffic.count_since(marked_at) >= 100, within=30, what="traffic after the mark")

        cluster.start_service(VICTIM)
        poll(lambda: gateway_health(cluster, VICTIM), within=10, what="the gateway taking it back")
        back_at, returned = time.monotonic(), served(cluster, VICTIM)
        poll(lambda: served(cluster, VICTIM) >= returned + 10, within=20, what=f"{VICTIM} serving again")
        poll(lambda: traffic.count_since(back_at) >= 50, within=30, what="traffic after the return")
    finally:
        traffic.stop.set()
        for worker in workers:
            worker.join(timeout=30)

    failures = traffic.failures()
    after_mark = [outcome for outcome in failures if outcome.started >= marked_at]
    retried = gateway_retries(cluster) - retries_before
    print(
        f"{signum.name}: marked down {1000 * (marked_at - killed_at):.0f} ms after the kill;"
        f" {len(traffic.outcomes)} requests, {len(failures)} failed"
        f" ({len(after_mark)} after the mark), {retried:.0f} saved by a retry: {failures}"
    )
    # What can be guaranteed: once the gateway has marked the replica down no request fails, and
    # none ever is a 500 or a hang. Under way at the kill, a POST the replica had read may fail
    # (502): it is never sent twice. GETs are sent again and connections that never opened carry
    # nothing, so those never fail. A graceful stop usually costs nothing at all, but a POST that
    # arrives on a kept-alive connection as the replica closes it is lost the same way, so zero is
    # measured, not asserted.
    assert after_mark == []
    assert all(outcome.status == 502 and outcome.what.startswith("POST") for outcome in failures), failures


def two_free_neighbours() -> int:
    """A port that is free together with the next one, as ``make run`` gives a second replica."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def test_make_run_with_two_auth_replicas_balances_and_stops_cleanly(
    tmp_path: Path, secrets_seen: Secrets
) -> None:
    ports = {
        "AUTH_PORT": two_free_neighbours(),
        **{name: free_port() for name in ("GATEWAY_PORT", "ORDERS_PORT", "REDIS_PORT")},
    }
    env = {
        **os.environ,
        **{name: str(port) for name, port in ports.items()},
        "AUTH_REPLICAS": "2",
        "VAR_DIR": str(tmp_path),
        # This test is about balancing and stopping, not Redis timeouts: at auth's 0.5 s default a
        # Redis reply held up by a busy CI machine made the login a 503 (it happened once).
        "REDIS_TIMEOUT_SECONDS": "3",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.devcluster"],
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
    reader = threading.Thread(
        target=lambda: lines.extend(line.rstrip("\n") for line in process.stdout or ()), daemon=True
    )
    reader.start()
    gateway = f"http://localhost:{ports['GATEWAY_PORT']}"
    try:
        poll(
            lambda: any(f"ready: {gateway}" in line for line in lines) or process.poll() is not None,
            within=90,
            what="make run ready",
        )
        assert process.poll() is None, "\n".join(lines[-30:])
        with httpx.Client(base_url=f"http://127.0.0.1:{ports['GATEWAY_PORT']}", timeout=10) as client:
            password = os.environ.get("DEMO_PASSWORD") or DEMO_PASSWORD
            login = client.post(
                "/auth/login", json={"email": ALICE, "password": password}, headers={"Origin": gateway}
            )
            assert login.status_code == 200, login.text
            headers = {
                "Cookie": f"{SESSION_COOKIE}={session_cookie(login).value}",
                "Origin": gateway,
                "X-CSRF-Token": login.json()["csrf_token"],
            }
            secrets_seen.add(headers["Cookie"].split("=", 1)[1])
            minted = [
                client.post("/auth/token", json={"audience": "orders"}, headers=headers) for _ in range(4)
            ]
            for response in minted:
                if response.status_code == 200:
                    secrets_seen.add(response.json()["access_token"])
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        reader.join(timeout=5)

    assert [response.status_code for response in minted] == [200] * 4
    assert status == 0, "\n".join(lines[-30:])
    for name in ("auth-1", "auth-2"):
        assert any(line.startswith(f"{name:<8}| ") and "POST /token 200" in line for line in lines), name
