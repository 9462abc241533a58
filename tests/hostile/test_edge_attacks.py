"""Attacks on every service's HTTP edge, while another user goes about their business.

Oversized heads, unfinished and trickled heads, and connection floods, each sent over raw
loopback sockets to the gateway and to auth and orders directly (anything on the private
network can reach them). What is asserted is what the other user sees and what the servers
hold: answers in the error shape, connections dropped within the deadline, resident memory
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.support.cluster import BOB, Browser, ClusterFactory, Secrets
from tests.support.http import bearer

pytestmark = pytest.mark.e2e

SERVICES = ("gateway", "auth", "orders")
HEAD_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 40
EDGE_ENV = {
    "EDGE_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
    "EDGE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    "EDGE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    # The other user mints a token every round and logs in once per test; these budgets are not under test.
    "TOKEN_RATE_LIMIT": "100000",
    "LOGIN_ACCOUNT_IP_LIMIT": "1000",
}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def edge_cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    """A cluster of its own: its connection cap and head deadline are low, so the attacks stay short."""
    with cluster_factory("edge", EDGE_ENV) as started:
        yield started


class OtherUser:
    """Bob, in a thread: logs in, then mints a token, creates and lists orders, round after round."""

    def __init__(self, cluster: Cluster, secrets: Secrets):
        self.cluster = cluster
        self.secrets = secrets
        self.errors: list[str] = []
        self.rounds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.cluster.url, timeout=10.0) as http:
            browser = Browser(self.cluster, http, self.secrets)
            try:
                session = browser.login(BOB)
            except (AssertionError, httpx.HTTPError) as exc:
                self.errors.append(f"login: {exc!r}")
                return
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    token = browser.token(session)
                    browser.create_order(token, item="edge")
                    listing = http.get("/api/orders", headers=bearer(token))
                    assert listing.status_code == 200, listing.text[:200]
                except (AssertionError, httpx.HTTPError) as exc:
                    self.errors.append(repr(exc))
                self.rounds.append(time.monotonic() - started)
                self._stop.wait(0.2)

    def _wait_for_rounds(self, count: int) -> None:
        deadline = time.monotonic() + 20
        while len(self.rounds) < count and not self.errors and self._thread.is_alive():
            assert time.monotonic() < deadline, "the other user's round did not finish in 20 s"
            time.sleep(0.05)

    def __enter__(self) -> OtherUser:
        """Returns once Bob is logged in and has done a first round, so the next ones overlap the attack."""
        self._thread.start()
        self._wait_for_rounds(1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # One more whole round after the attack's own end, so some round overlapped it.
        self._wait_for_rounds(len(self.rounds) + 1)
        self._stop.set()
        self._thread.join(timeout=30)

    def assert_unharmed(self) -> None:
        assert not self.errors, self.errors[:5]
        assert self.rounds, "the other user completed no round"
        assert max(self.rounds) < 5.0, max(self.rounds)


def _pids(pid: int) -> list[int]:
    """``pid`` and every process below it (a service's workers, when it runs several)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending.extend(int(child) for child in children.read_text().split())
    return found


def rss_bytes(cluster: Cluster, service: str) -> int:
    """Resident memory of the service's processes, from ``/proc/<pid>/status``."""
    pid = cluster.pid(service)
    assert pid is not None, f"{service} is not running"
    total = 0
    for member in _pids(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def _address(cluster: Cluster, service: str) -> tuple[str, int]:
    parts = urlsplit(cluster.service_url(service))
    assert parts.hostname in ("127.0.0.1", "localhost", "::1"), parts.hostname
    assert parts.port is not None
    return parts.hostname, parts.port


def _parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


async def _read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    received = b""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def _oversized_head(address: tuple[str, int], offered: int) -> tuple[bytes, int]:
    """``GET /healthz`` then ``offered`` bytes of ordinary header lines; the answer, and what got out."""
    reader, writer = await asyncio.open_connection(*address)
    line = b"X-Padding: " + b"a" * 50 + b"\r\n"
    chunk = line * (65536 // len(line))
    sent = 0

    async def flood() -> None:
        nonlocal sent
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        with contextlib.suppress(ConnectionError):
            while sent < offered:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)

    flooding = asyncio.create_task(flood())
    try:
        raw = await _read_until_closed(reader, within=20)
    finally:
        flooding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flooding
        writer.close()
    return raw, sent


@pytest.mark.parametrize("service", SERVICES)
async def test_oversized_heads_are_cut_off_early_and_memory_stays_bounded(
    edge_cluster: Cluster, secrets_seen: Secrets, service: str
) -> None:
    address = _address(edge_cluster, service)
    before = rss_bytes(edge_cluster, service)
    with OtherUser(edge_cluster, secrets_seen) as bob:
        # Four connections at once, each offering 25 MiB of header lines of an ordinary size.
        results = await asyncio.gather(*(_oversized_head(address, 25 * MIB) for _ in range(4)))
        peak = rss_bytes(edge_cluster, service)
    for raw, _ in results:
        status, headers, body = _parse(raw)
        assert status == 431, raw[:300]
        assert body["error"] == "headers_too_large"
        assert headers["connection"] == "close"
    # Before the edge limits, one such connection of 64 MiB grew the gateway by 67 MiB.
    assert peak - before < 20 * MIB, (before, peak)
    assert rss_bytes(edge_cluster, service) - before < 20 * MIB
    bob.assert_unharmed()


async def _unfinished(address: tuple[str, int], opening: bytes, trickle: bytes | None) -> tuple[bytes, float]:
    """Send ``opening``, then ``trickle`` (``{n}`` numbered) every half second; the answer, and how long
    the connection lived."""
    reader, writer = await asyncio.open_connection(*address)
    started = time.monotonic()
    writer.write(opening)

    async def trickling() -> None:
        with contextlib.suppress(ConnectionError):
            for number in range(120):
                await asyncio.sleep(0.5)
                assert trickle is not None
                writer.write(trickle.replace(b"{n}", b"%d" % number))
                await writer.drain()

    task = asyncio.create_task(trickling()) if trickle else None
    try:
        raw = await _read_until_closed(reader, within=HEAD_TIMEOUT + 8)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        writer.close()
    return raw, time.monotonic() - started


@pytest.mark.parametrize("service", SERVICES)
async def test_unfinished_and_trickled_heads_are_dropped_within_the_deadline(
    edge_cluster: Cluster, secrets_seen: Secrets, service: str
) -> None:
    address = _address(edge_cluster, service)
    with OtherUser(edge_cluster, secrets_seen) as bob:
        attacks = [
            *(_unfinished(address, b"GET /healthz HT", None) for _ in range(5)),
            *(_unfinished(address, b"GET /healthz HTTP/1.1\r\n", b"X-Slow-{n}: 1\r\n") for _ in range(5)),
            *(_unfinished(address, b"", None) for _ in range(5)),
        ]
        results = await asyncio.gather(*attacks)
    for index, (raw, lived) in enumerate(results):
        # Before the deadline existed, such connections were still served after 90 s.
        assert lived < HEAD_TIMEOUT + 3, (index, lived)
        if index < 10:
            status, _, body = _parse(raw)
            assert (status, body["error"]) == (408, "request_timeout"), raw[:300]
        else:
            assert raw == b"", "a connection that asked nothing is closed without an answer"
    bob.assert_unharmed()


@pytest.mark.parametrize(("service", "path"), [("gateway", "/auth/login"), ("auth", "/login")])
async def test_a_trickled_body_is_408_within_the_deadline(
    edge_cluster: Cluster, secrets_seen: Secrets, service: str, path: str
) -> None:
    address = _address(edge_cluster, service)
    opening = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: {edge_cluster.public_origin}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    ).encode()
    with OtherUser(edge_cluster, secrets_seen) as bob:
        results = await asyncio.gather(*(_unfinished(address, opening, b" ") for _ in range(5)))
    for raw, lived in results:
        status, headers, body = _parse(raw)
        assert (status, body["error"], headers["connection"]) == (408, "request_timeout", "close"), raw[:300]
        assert lived < BODY_TIMEOUT + 3, lived
    bob.assert_unharmed()


@pytest.mark.parametrize("service", SERVICES)
async def test_a_request_with_two_origins_is_refused(edge_cluster: Cluster, service: str) -> None:
    reader, writer = await asyncio.open_connection(*_address(edge_cluster, service))
    writer.write(
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        + f"Origin: {edge_cluster.public_origin}\r\nOrigin: http://attacker.localhost:9000\r\n\r\n".encode()
    )
    raw = await _read_until_closed(reader, within=10)
    writer.close()
    status, _, body = _parse(raw)
    assert (status, body["error"]) == (400, "duplicate_origin")


async def _request(address: tuple[str, int], within: float = 10) -> tuple[int, dict[str, str], Any, float]:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    try:
        raw = await _read_until_closed(reader, within)
    finally:
        writer.close()
    status, headers, body = _parse(raw)
    return status, headers, body, time.monotonic() - started


@pytest.mark.parametrize("service", ["gateway", "orders"])
async def test_a_connection_flood_over_the_cap_gets_fast_503s_and_the_service_recovers(
    edge_cluster: Cluster, secrets_seen: Secrets, service: str
) -> None:
    address = _address(edge_cluster, service)
    # The cap's worth of connections that say nothing, and one request more.
    idle = [await asyncio.open_connection(*address) for _ in range(MAX_CONNECTIONS)]
    try:
        status, headers, body, took = await _request(address)
        assert (status, body["error"], headers["retry-after"]) == (503, "service_unavailable", "1")
        assert took < 2.0, took
        # A flood of requests: every one answered, 200 or a fast 503, none left waiting.
        answers = await asyncio.gather(*(_request(address) for _ in range(2 * MAX_CONNECTIONS)))
        assert {answer[0] for answer in answers} <= {200, 503}
        assert 503 in {answer[0] for answer in answers}
        assert max(answer[3] for answer in answers if answer[0] == 503) < 5.0
        # The idle connections are left open: the head deadline drops them and the cap frees itself.
        async with asyncio.timeout(HEAD_TIMEOUT + 10):
            while (await _request(address))[0] != 200:  # noqa: ASYNC110 - polls the server until it recovers
                await asyncio.sleep(0.1)
    finally:
        for _, writer in idle:
            writer.close()
    with OtherUser(edge_cluster, secrets_seen) as bob:
        pass
    bob.assert_unharmed()
