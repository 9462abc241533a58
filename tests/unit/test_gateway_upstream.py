"""The gateway's upstream pool on its own, over a mock network: reuse, limits, TLS, failures."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import httpcore
import pytest

from services.gateway.upstream import Limits, Origin, PoolExhausted, UpstreamPool

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
LIMITS = Limits(max_connections=2, pool_timeout=0.1, connect_timeout=1, timeout=1)


class Network(httpcore.AsyncNetworkBackend):
    """A mock network that counts connections and TLS handshakes; each connection answers ``replies``."""

    def __init__(self, replies: Sequence[bytes]):
        self.replies = list(replies)
        self.connects: list[tuple[str, int]] = []
        self.handshakes: list[str | None] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        network = self

        class Stream(httpcore.AsyncMockStream):
            async def start_tls(
                self,
                ssl_context: ssl.SSLContext,
                server_hostname: str | None = None,
                timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
            ) -> httpcore.AsyncNetworkStream:
                network.handshakes.append(server_hostname)
                return self

        return Stream(list(self.replies))


async def get(pool: UpstreamPool, url: str) -> bytes:
    origin = Origin.parse(url)
    reply = await pool.request(origin, b"GET", b"/", [(b"host", origin.netloc)], None)
    try:
        return await reply.read()
    finally:
        await reply.aclose()


async def test_a_connection_is_reused_for_the_next_request() -> None:
    network = Network([OK, OK, OK])
    pool = UpstreamPool("orders", ["http://orders:8002"], LIMITS, network_backend=network)
    assert [await get(pool, "http://orders:8002") for _ in range(3)] == [b"{}"] * 3
    assert network.connects == [("orders", 8002)]
    assert (pool.in_use, pool.idle) == (0, 1)


async def test_an_https_origin_is_reached_over_tls_for_its_own_name() -> None:
    network = Network([OK])
    pool = UpstreamPool("auth", ["https://auth.internal"], LIMITS, network_backend=network)
    assert await get(pool, "https://auth.internal") == b"{}"
    assert network.connects == [("auth.internal", 443)]
    assert network.handshakes == ["auth.internal"]


async def test_a_plain_http_origin_has_no_handshake() -> None:
    network = Network([OK])
    pool = UpstreamPool("auth", ["http://auth"], LIMITS, network_backend=network)
    await get(pool, "http://auth")
    assert network.handshakes == []


async def test_a_request_beyond_the_limit_waits_the_pool_timeout_then_is_refused() -> None:
    network = Network([OK])
    pool = UpstreamPool("orders", ["http://orders"], LIMITS, network_backend=network)
    origin = Origin.parse("http://orders")
    held = [await pool.request(origin, b"GET", b"/", [(b"host", b"orders")], None) for _ in range(2)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PoolExhausted):
        await pool.request(origin, b"GET", b"/", [(b"host", b"orders")], None)
    assert loop.time() - started >= LIMITS.pool_timeout * 0.9
    assert pool.exhausted == 1
    await held[0].aclose()
    # A released connection serves the next request at once.
    assert await get(pool, "http://orders") == b"{}"
    await held[1].aclose()
    assert pool.in_use == 0


async def test_idle_connections_to_one_origin_make_room_for_another_within_the_limit() -> None:
    network = Network([OK, OK])
    pool = UpstreamPool("auth", ["http://a", "http://b", "http://c"], LIMITS, network_backend=network)
    for url in ("http://a", "http://b", "http://c"):
        await get(pool, url)
    assert len(network.connects) == 3
    assert pool.idle <= LIMITS.max_connections


async def test_a_connection_that_breaks_is_closed_and_its_slot_freed() -> None:
    # The upstream closes without an answer: the exchange fails and nothing is pooled.
    network = Network([])
    pool = UpstreamPool("orders", ["http://orders"], LIMITS, network_backend=network)
    with pytest.raises(httpcore.RemoteProtocolError):
        await get(pool, "http://orders")
    assert (pool.in_use, pool.idle) == (0, 0)
