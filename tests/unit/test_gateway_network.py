"""The gateway's own HTTP/1.1 upstream connection (httptools), against real loopback servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpcore
import pytest

from services.gateway.network import MAX_HEAD_BYTES, READ_HIGH_WATER, Connection, connect, request_head
from services.gateway.upstream import Limits, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TIMEOUT = 2.0


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[int]:
    served = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield served.sockets[0].getsockname()[1]
    finally:
        served.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answering(*answers: bytes, pieces: int = 1) -> tuple[Handler, list[int]]:
    """A server that answers each request on a connection with the next of ``answers``, written in
    ``pieces`` separate writes; it counts the connections it accepted."""
    accepted: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            for answer in answers:
                await read_head(reader)
                step = max(1, len(answer) // pieces)
                for start in range(0, len(answer), step):
                    writer.write(answer[start : start + step])
                    await writer.drain()
                    await asyncio.sleep(0.001)  # separate reads on the gateway's side
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handler, accepted


async def exchange(connection: Connection, method: bytes = b"GET") -> bytes:
    await connection.request(method, b"/x", [(b"host", b"upstream")], None, io_timeout=TIMEOUT)
    body = b"".join([chunk async for chunk in connection.aiter_body(io_timeout=TIMEOUT)])
    await connection.finish()
    return body


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpcore.ConnectError):
        await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)


async def test_a_silent_upstream_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with server(silent) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        with pytest.raises(httpcore.ReadTimeout):
            await connection.request(b"GET", b"/", [(b"host", b"x")], None, io_timeout=0.1)
        connection.close()


async def test_an_answer_split_across_many_reads_is_whole_and_the_connection_reusable() -> None:
    handler, accepted = answering(OK, OK, pieces=len(OK))
    async with server(handler) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        assert await exchange(connection) == b"hello"
        assert connection.status == 200
        assert connection.headers == [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")]
        assert connection.is_reusable()
        assert await exchange(connection) == b"hello"
        assert accepted == [1]
        connection.close()


async def test_a_chunked_answer_arrives_without_its_framing_and_keeps_the_connection() -> None:
    handler, _ = answering(CHUNKED, OK, pieces=7)
    async with server(handler) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        assert await exchange(connection) == b"hello world"
        assert connection.is_reusable()
        assert await exchange(connection) == b"hello"
        connection.close()


async def test_an_upstream_that_closes_mid_body_is_an_error_not_a_short_answer() -> None:
    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()
        writer.close()

    async with server(truncate) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        await connection.request(b"GET", b"/", [(b"host", b"x")], None, io_timeout=TIMEOUT)
        body = connection.aiter_body(io_timeout=TIMEOUT)
        assert await anext(body) == b"only ten b"
        with pytest.raises(httpcore.RemoteProtocolError):
            await anext(body)
        assert not connection.is_reusable()


async def test_a_body_delimited_by_close_is_read_to_the_end_and_not_reused() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async with server(until_close) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        assert await exchange(connection) == b"all of it"
        assert not connection.is_reusable()


async def test_connection_close_from_the_upstream_is_honoured() -> None:
    handler, _ = answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    async with server(handler) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        assert await exchange(connection) == b"ok"
        assert not connection.is_reusable()


async def test_a_head_answer_has_no_body_and_its_connection_is_not_reused() -> None:
    handler, _ = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    async with server(handler) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        assert await exchange(connection, b"HEAD") == b""
        assert not connection.is_reusable()


async def test_an_interim_answer_is_skipped_for_the_final_one() -> None:
    handler, _ = answering(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK)
    async with server(handler) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        assert await exchange(connection) == b"hello"
        assert connection.status == 200
        assert (b"Link", b"</a>") not in connection.headers
        connection.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n\r\n",
    ],
    ids=["garbage", "bad-length", "head-too-large"],
)
async def test_a_broken_answer_is_a_remote_protocol_error(answer: bytes) -> None:
    handler, _ = answering(answer)
    async with server(handler) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        with pytest.raises(httpcore.RemoteProtocolError):
            await connection.request(b"GET", b"/", [(b"host", b"x")], None, io_timeout=TIMEOUT)
        assert not connection.is_reusable()


async def test_an_idle_connection_the_upstream_closed_has_expired() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await writer.drain()
        writer.close()

    async with server(once) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        assert await exchange(connection) == b"hello"
        for _ in range(200):
            if connection.has_expired():
                break
            await asyncio.sleep(0.01)
        assert connection.has_expired()


@pytest.mark.parametrize(
    "header",
    [(b"x-bad", b"a\r\nx-injected: 1"), (b"x-bad", b"a\nb"), (b"x bad", b"a"), (b"x-bad", b" padded")],
)
def test_a_header_that_could_split_the_request_is_refused_before_sending(header: tuple[bytes, bytes]) -> None:
    with pytest.raises(httpcore.LocalProtocolError):
        request_head(b"GET", b"/", [header])


def test_the_request_head_is_one_buffer_in_order() -> None:
    head = request_head(b"POST", b"/a?b=c", [(b"host", b"orders:8002"), (b"content-length", b"2")])
    assert head == b"POST /a?b=c HTTP/1.1\r\nhost: orders:8002\r\ncontent-length: 2\r\n\r\n"


async def test_a_fast_upstream_and_a_slow_reader_buffer_a_bounded_amount() -> None:
    total = 8 * 1024 * 1024

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        writer.write(b"x" * total)
        await writer.drain()
        writer.close()

    async with server(flood) as port:
        connection = await connect("127.0.0.1", port, io_timeout=1, keepalive_expiry=4)
        await connection.request(b"GET", b"/", [(b"host", b"x")], None, io_timeout=TIMEOUT)
        received, peak = 0, 0
        async for chunk in connection.aiter_body(io_timeout=5):
            received += len(chunk)
            peak = max(peak, connection._buffered)
            await asyncio.sleep(0)  # the upstream gets a turn to send more meanwhile
        assert received == total
        # Reading pauses above the high mark; one socket read more may land before it takes effect.
        assert peak <= READ_HIGH_WATER + 256 * 1024


LIMITS = Limits(max_connections=2, pool_timeout=1, connect_timeout=1, timeout=TIMEOUT)


async def test_the_pool_reuses_a_connection_after_a_complete_answer() -> None:
    handler, accepted = answering(OK, CHUNKED, OK)
    async with server(handler) as port:
        url = f"http://127.0.0.1:{port}"
        pool = UpstreamPool("orders", [url], LIMITS)
        origin = pool.origins[url]
        for expected in (b"hello", b"hello world", b"hello"):
            reply = await pool.request(origin, b"GET", b"/", [(b"host", b"x")], None)
            assert await reply.read() == expected
            await reply.aclose()
        assert accepted == [1]
        assert (pool.idle, pool.in_use) == (1, 0)
        await pool.aclose()


async def test_the_pool_does_not_reuse_a_connection_after_a_truncated_answer() -> None:
    accepted: list[int] = []

    async def truncate_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        await read_head(reader)
        if len(accepted) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        else:
            writer.write(OK)
        await writer.drain()
        if len(accepted) == 1:
            writer.close()
            return
        await reader.read()
        writer.close()

    async with server(truncate_first) as port:
        url = f"http://127.0.0.1:{port}"
        pool = UpstreamPool("orders", [url], LIMITS)
        origin = pool.origins[url]
        reply = await pool.request(origin, b"GET", b"/", [(b"host", b"x")], None)
        with pytest.raises(httpcore.RemoteProtocolError):
            await reply.read()
        await reply.aclose()
        assert (pool.idle, pool.in_use) == (0, 0)
        reply = await pool.request(origin, b"GET", b"/", [(b"host", b"x")], None)
        assert await reply.read() == b"hello"
        await reply.aclose()
        assert len(accepted) == 2
        await pool.aclose()


async def test_the_pool_closes_a_connection_whose_answer_was_left_unread() -> None:
    handler, _ = answering(OK, OK)
    async with server(handler) as port:
        url = f"http://127.0.0.1:{port}"
        pool = UpstreamPool("orders", [url], LIMITS)
        origin = pool.origins[url]
        reply = await pool.request(origin, b"GET", b"/", [(b"host", b"x")], None)
        await reply.aclose()  # the body was never read
        assert (pool.idle, pool.in_use) == (0, 0)
        await pool.aclose()
