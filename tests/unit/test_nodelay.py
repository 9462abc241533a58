"""Every accepted connection has Nagle's algorithm off, even on a socket bound the multi-worker way."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared.runtime.protocol import HttpProtocol


async def _hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _listening_socket_like_uvicorn_workers() -> socket.socket:
    # uvicorn's multi-worker supervisor binds socket(family) itself: proto is 0, not IPPROTO_TCP.
    sock = socket.socket(family=socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    assert sock.proto == 0
    return sock


async def _server_side_nodelay(protocol: type[asyncio.Protocol] | str) -> int:
    sock = _listening_socket_like_uvicorn_workers()
    config = uvicorn.Config(
        Starlette(routes=[Route("/", _hello)]), http=protocol, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
                await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        (connection,) = server.server_state.connections
        accepted = connection.transport.get_extra_info("socket")  # type: ignore[attr-defined]
        nodelay: int = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        return nodelay
    finally:
        server.should_exit = True
        await serving


async def test_connections_accepted_on_a_proto_zero_socket_get_tcp_nodelay() -> None:
    assert await _server_side_nodelay(HttpProtocol) != 0


async def test_without_it_uvicorn_leaves_nagle_on_for_such_sockets() -> None:
    # The reason the protocol exists: if this starts failing, uvicorn fixed it upstream.
    assert await _server_side_nodelay("httptools") == 0
