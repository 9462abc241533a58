"""The gateway's asyncio network layer for httpcore, against real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpcore
import pytest

from services.gateway.network import READ_HIGH_WATER, AsyncioBackend, AsyncioStream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[int]:
    served = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield served.sockets[0].getsockname()[1]
    finally:
        served.close()


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpcore.ConnectError):
        await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=1)


async def test_a_silent_upstream_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    async with server(silent) as port:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=1)
        await stream.write(b"x")
        with pytest.raises(httpcore.ReadTimeout):
            await stream.read(100, timeout=0.1)
        await stream.aclose()


async def test_an_upstream_that_closes_reads_as_the_end_and_as_readable() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with server(hang_up) as port:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=1)
        assert await stream.read(100, timeout=1) == b""
        # What httpcore asks of an idle pooled connection before reusing it.
        assert stream.get_extra_info("is_readable") is True
        await stream.aclose()


async def test_a_fast_upstream_and_a_slow_reader_buffer_a_bounded_amount() -> None:
    total = 8 * 1024 * 1024

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * total)
        await writer.drain()
        writer.close()

    async with server(flood) as port:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=1)
        assert isinstance(stream, AsyncioStream)
        received, peak = 0, 0
        while chunk := await stream.read(65536, timeout=5):
            received += len(chunk)
            peak = max(peak, stream._protocol.buffered)
            await asyncio.sleep(0)  # the upstream gets a turn to send more meanwhile
        assert received == total
        # Reading pauses above the high mark; one socket read more may land before it takes effect.
        assert peak <= READ_HIGH_WATER + 256 * 1024
        await stream.aclose()
