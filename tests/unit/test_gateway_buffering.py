"""Small upstream responses are read whole and sent in one piece; large or unsized ones stream."""

from __future__ import annotations

import gzip

import httpcore
import pytest
from starlette.responses import Response

from services.gateway import proxy
from services.gateway.settings import RESPONSE_BUFFER_BYTES
from services.gateway.upstream import Limits, Origin, Reply, UpstreamPool
from shared.core import BadGateway

ORIGIN = "http://orders"
LIMITS = Limits(max_connections=1, pool_timeout=1, connect_timeout=1, timeout=1)


async def upstream(head: bytes, *body: bytes) -> tuple[UpstreamPool, Reply]:
    """A reply as the gateway's pool hands it over: sent, head read, body not yet read."""
    pool = UpstreamPool("orders", [ORIGIN], LIMITS, network_backend=httpcore.AsyncMockBackend([head, *body]))
    reply = await pool.request(Origin.parse(ORIGIN), b"GET", b"/orders", [(b"host", b"orders")], None)
    return pool, reply


async def test_a_small_response_is_buffered_with_its_raw_bytes_and_headers() -> None:
    raw = gzip.compress(b'{"orders": []}')
    pool, sent = await upstream(
        b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(raw), raw
    )
    headers = [(b"content-encoding", b"gzip"), (b"content-length", str(len(raw)).encode())]

    response = await proxy.respond(sent, headers, buffer_bytes=RESPONSE_BUFFER_BYTES, send_timeout=1)

    assert not isinstance(response, proxy.UpstreamResponse)
    assert response.body == raw, "still encoded: the client asked for gzip, not the gateway"
    assert response.raw_headers == headers
    assert sent.is_closed, "the upstream connection went back to the pool at once"
    assert (pool.in_use, pool.idle) == (0, 1)


@pytest.mark.parametrize(
    "framing",
    [b"content-length: %d" % (RESPONSE_BUFFER_BYTES + 1), b"transfer-encoding: chunked"],
)
async def test_large_or_unsized_responses_stream(framing: bytes) -> None:
    pool, sent = await upstream(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n")
    response = await proxy.respond(sent, [], buffer_bytes=RESPONSE_BUFFER_BYTES, send_timeout=1)
    assert isinstance(response, proxy.UpstreamResponse)
    await sent.aclose()
    assert pool.in_use == 0


async def test_the_buffer_size_is_a_setting() -> None:
    _, sent = await upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"{}")
    response: Response = await proxy.respond(sent, [], buffer_bytes=1, send_timeout=1)
    assert isinstance(response, proxy.UpstreamResponse)
    await sent.aclose()


async def test_a_body_that_breaks_off_is_a_502_and_the_connection_is_dropped() -> None:
    # The mock stream ends after the first piece, as a connection closed mid-body does.
    pool, sent = await upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", b"{")
    with pytest.raises(BadGateway):
        await proxy.respond(sent, [], buffer_bytes=RESPONSE_BUFFER_BYTES, send_timeout=1)
    assert sent.is_closed
    assert (pool.in_use, pool.idle) == (0, 0), "a connection left mid-answer is never reused"
