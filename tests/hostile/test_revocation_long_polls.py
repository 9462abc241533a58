"""Long-polls of the revocation feed as an attacker would send them: many, held as long as allowed.

Each held long-poll takes one of a worker's in-flight slots, at auth and at the gateway. Auth holds
at most ``REVOCATIONS_MAX_WAITERS`` and answers the rest at once, so a flood of them cannot
take the slots that logins and tokens need. Through the gateway, a held request outlasts the
upstream timeout by the wait the route allows, and no more.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.support.cluster import BOB, Browser, ClusterFactory, Secrets, new_request_id, wait_for_log_line
from tests.support.polling import poll

pytestmark = pytest.mark.e2e

FEED = "/.well-known/revocations.json"
MAX_WAITERS = 4
ENV = {
    "REVOCATIONS_MAX_WAITERS": str(MAX_WAITERS),
    # Small, so that unbounded long-polls would take every slot of auth and of the gateway.
    "EDGE_MAX_IN_FLIGHT": "12",
    # Below the wait asked for: the gateway must give this route its hold on top. (Not lower: a
    # login's argon2 must still fit on a loaded machine.)
    "UPSTREAM_TIMEOUT_SECONDS": "3",
    "LOGIN_ACCOUNT_IP_LIMIT": "1000",
}
FLOOD = 40


@pytest.fixture(scope="module")
def polled_cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    with cluster_factory("long-polls", ENV) as started:
        yield started


def test_a_long_poll_through_the_gateway_outlasts_the_upstream_timeout(polled_cluster: Cluster) -> None:
    with httpx.Client(base_url=polled_cluster.url, timeout=20.0) as http:
        etag = http.get(FEED).headers["etag"]
        started = time.monotonic()
        response = http.get(FEED, headers={"If-None-Match": etag, "Prefer": "wait=6"})
        elapsed = time.monotonic() - started
    assert response.status_code == 304, response.text
    assert response.headers["preference-applied"] == "wait=6"
    assert 5.8 <= elapsed < 15


@pytest.mark.parametrize("via", ["gateway", "auth"])
def test_a_flood_of_long_polls_cannot_take_the_slots_logins_need(polled_cluster: Cluster, via: str) -> None:
    base = polled_cluster.url if via == "gateway" else polled_cluster.service_url("auth")
    with httpx.Client(base_url=polled_cluster.url, timeout=10.0) as http:
        browser = Browser(polled_cluster, http, Secrets())
        etag = http.get(FEED).headers["etag"]
        outcome = asyncio.run(_flood(base, etag, browser))
    held, answered, logout_status, login_seconds = outcome
    # The bound holds: at most MAX_WAITERS held, every other long-poll answered at once with 304 and
    # no Preference-Applied, so its client falls back to polling at max-age.
    assert len(held) <= MAX_WAITERS
    assert len(held) + len(answered) == FLOOD
    assert not any("preference-applied" in response.headers for response in answered)
    # A burst of 40 at once also meets the edge's own in-flight cap (12): a fast 503 to retry later.
    assert {response.status_code for response in answered} <= {304, 503}
    assert all("retry-after" in response.headers for response in answered if response.status_code == 503)
    # Meanwhile a login and its logout went through, fast; the logout woke the held ones.
    assert login_seconds < 5
    assert logout_status == 200
    assert {response.status_code for response in held} <= {200}


async def _flood(
    base: str, etag: str, browser: Browser
) -> tuple[list[httpx.Response], list[httpx.Response], int, float]:
    limits = httpx.Limits(max_connections=FLOOD + 10)
    async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) as attacker:
        headers = {"If-None-Match": etag, "Prefer": "wait=20"}
        started = time.monotonic()
        polls = [asyncio.create_task(attacker.get(FEED, headers=headers)) for _ in range(FLOOD)]
        # The ones not held come back at once; give them a generous moment on a loaded machine.
        pending = set(polls)
        while len(pending) > MAX_WAITERS and (left := started + 5 - time.monotonic()) > 0:
            _, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        early = {task for task in polls if task.done()}
        answered = [task.result() for task in early]
        login_started = time.monotonic()
        session = await asyncio.to_thread(browser.login, BOB)
        login_seconds = time.monotonic() - login_started
        # The logout records a revocation, which wakes every held long-poll with the new feed.
        logout = await asyncio.to_thread(browser.logout, session)
        held = await asyncio.wait_for(asyncio.gather(*(task for task in polls if task not in early)), 10)
    return list(held), answered, logout.status_code, login_seconds


def _held_at(auth: str) -> float:
    """Auth's gauge of the long-polls it holds now, the verifiers' own included."""
    text = httpx.get(f"{auth}/metrics", timeout=10).text
    (value,) = [line.split()[1] for line in text.splitlines() if line.startswith("auth_revocation_waiters ")]
    return float(value)


def test_long_polls_whose_clients_left_give_their_slots_back_at_once(polled_cluster: Cluster) -> None:
    # An attacker (or a verifier killed mid-poll) that fills the bounded slots and drops its
    # connections must not keep them for the whole wait; the held requests also held up auth's
    # shutdown by uvicorn's graceful timeout, which drains open connections only.
    auth = polled_cluster.service_url("auth")
    host, port = auth.removeprefix("http://").split(":")
    etag = httpx.get(f"{auth}{FEED}", timeout=10).headers["etag"]
    request_ids = [new_request_id() for _ in range(MAX_WAITERS)]
    dropped = [socket.create_connection((host, int(port)), timeout=10) for _ in request_ids]
    try:
        for connection, request_id in zip(dropped, request_ids, strict=True):
            connection.sendall(
                f"GET {FEED} HTTP/1.1\r\nHost: {host}\r\nIf-None-Match: {etag}\r\n"
                f"Prefer: wait=20\r\nX-Request-ID: {request_id}\r\n\r\n".encode()
            )
        # Full: the verifiers hold at most two, so at least two of these are held.
        poll(lambda: _held_at(auth) == MAX_WAITERS, within=10, what="every slot held")
    finally:
        for connection in dropped:
            connection.close()

    # Each one ends well within the 20 s it asked for (auth logs a request as it ends).
    for request_id in request_ids:
        ended = wait_for_log_line(
            polled_cluster,
            "auth",
            lambda line, wanted=request_id: line.get("request_id") == wanted,
            timeout=3,
        )
        assert ended["duration_ms"] < 5000, ended
    response = httpx.get(f"{auth}{FEED}", headers={"If-None-Match": etag, "Prefer": "wait=1"}, timeout=10)
    assert response.status_code == 304
    assert response.headers["preference-applied"] == "wait=1"
