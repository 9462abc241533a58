"""Redis stopped or hung under traffic: auth answers 503 within the bound, never 500, and recovers alone."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.support.cluster import ALICE, Browser, ClusterFactory, Secrets
from tests.support.http import SESSION_COOKIE
from tests.support.polling import poll

pytestmark = pytest.mark.e2e

# The "about a second", with an honest margin for a loaded 2-core machine.
BOUND_SECONDS = 1.5


@pytest.fixture(scope="module")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    with cluster_factory("redis-outage") as started:
        yield started


@dataclass
class Traffic:
    """A client minting tokens and reading its session in a loop, recording each status and duration."""

    cluster: Cluster
    secrets: Secrets
    results: list[tuple[float, int, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.cluster.url, timeout=10.0) as client:
            browser = Browser(self.cluster, client, self.secrets)
            session = browser.login(ALICE)
            cookie = {"Cookie": f"{SESSION_COOKIE}={session.cookie}"}
            requests = [
                lambda: browser.request_token(session),
                lambda: client.get("/auth/me", headers=cookie),
            ]
            while not self.stop.is_set():
                for send in requests:
                    started = time.monotonic()
                    try:
                        status = send().status_code
                    except httpx.TimeoutException:
                        status = 0  # a hung request: the client gave up after 10 s
                    self.results.append((started, status, time.monotonic() - started))

    def since(self, moment: float) -> list[tuple[float, int, float]]:
        return [result for result in self.results if result[0] >= moment]


@pytest.mark.parametrize("fault", ["stopped", "hung"])
def test_redis_fault_mid_traffic_gives_fast_503s_and_auth_recovers_without_restart(
    cluster: Cluster, secrets_seen: Secrets, fault: str
) -> None:
    auth_pid = cluster.pid("auth")
    traffic = Traffic(cluster, secrets_seen)
    worker = threading.Thread(target=traffic.run, name="redis-traffic")
    worker.start()
    try:
        poll(lambda: len(traffic.results) >= 5, within=20, what="traffic starting")
        assert {status for _, status, _ in traffic.results} == {200}
        redis_pid = cluster.pid("redis")
        assert redis_pid is not None
        fault_at = time.monotonic()
        if fault == "stopped":
            cluster.stop_service("redis")
        else:
            os.kill(redis_pid, signal.SIGSTOP)
        try:
            poll(
                lambda: sum(status == 503 for _, status, _ in traffic.since(fault_at)) >= 10,
                within=30,
                what="ten 503s",
            )
            ready = httpx.get(f"{cluster.service_url('auth')}/readyz", timeout=5)
            assert ready.status_code == 503
            assert ready.json()["checks"]["redis"] is False
        finally:
            restored_at = time.monotonic()
            if fault == "stopped":
                cluster.start_service("redis")
            else:
                os.kill(redis_pid, signal.SIGCONT)
        poll(
            lambda: any(status == 200 for _, status, _ in traffic.since(restored_at)),
            within=15,
            what="a token after Redis returned",
        )
    finally:
        traffic.stop.set()
        worker.join(timeout=30)

    during = [(status, seconds) for at, status, seconds in traffic.since(fault_at) if at < restored_at]
    statuses = {status for status, _ in during}
    slowest = max(seconds for status, seconds in during if status == 503)
    print(
        f"redis {fault}: {len(during)} requests during the fault,"
        f" statuses {statuses}, slowest 503 {slowest:.3f} s"
    )
    assert statuses <= {200, 503}, statuses
    assert slowest < BOUND_SECONDS
    assert cluster.pid("auth") == auth_pid
    assert httpx.get(f"{cluster.service_url('auth')}/readyz", timeout=5).status_code == 200
