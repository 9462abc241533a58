"""A response leaves in one write: the transport joins the writes of one event-loop step."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared.runtime.protocol import CoalescingTransport, HttpProtocol
from shared.web.disconnect import disconnect_future


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.events.append(("write", bytes(data)))

    def close(self) -> None:
        self.events.append(("close", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


async def _next_step() -> None:
    # One pass of the loop runs the callbacks scheduled before it.
    await asyncio.sleep(0)


async def test_writes_of_one_step_leave_as_one_write_in_order() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(memoryview(b"body"))
    assert inner.events == []
    await _next_step()
    assert inner.events == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]


async def test_writes_of_later_steps_are_not_held_back() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"one")
    await _next_step()
    transport.write(b"two")
    await _next_step()
    assert inner.events == [("write", b"one"), ("write", b"two")]


async def test_close_sends_what_is_pending_first() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"last words")
    transport.close()
    await _next_step()
    assert inner.events == [("write", b"last words"), ("close", b"")]
    assert transport.get_write_buffer_size() == 0


async def _hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello", headers={"Cache-Control": "no-store"})


async def test_a_real_server_answers_each_request_with_one_write() -> None:
    config = uvicorn.Config(
        Starlette(routes=[Route("/", _hello)]),
        host="127.0.0.1",
        port=0,
        http=HttpProtocol,
        log_config=None,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            head = await reader.readuntil(b"hello")
            (connection,) = server.server_state.connections
            wrapped = connection.transport  # type: ignore[attr-defined]
            assert isinstance(wrapped, CoalescingTransport)
            writes: list[bytes] = []
            real_write = wrapped._transport.write

            def counting_write(data: bytes) -> None:
                writes.append(data)
                real_write(data)

            wrapped._transport.write = counting_write  # type: ignore[method-assign]
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            again = await reader.readuntil(b"hello")
            writer.close()
        assert head.startswith(b"HTTP/1.1 200")
        assert again.startswith(b"HTTP/1.1 200")
        assert len(writes) == 1, "head and body in one write"
        assert writes[0] == again
    finally:
        server.should_exit = True
        await serving


async def test_a_request_learns_its_client_left_from_the_connections_future() -> None:
    # The application never calls receive: the future alone must tell it the client has gone.
    seen: list[asyncio.Future[None] | None] = []
    left = asyncio.Event()

    async def waiting_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        lost = disconnect_future(scope)
        seen.append(lost)
        assert lost is not None
        await lost
        left.set()

    config = uvicorn.Config(
        waiting_app, host="127.0.0.1", port=0, http=HttpProtocol, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            while not seen:  # noqa: ASYNC110 - the app's own record of being called
                await asyncio.sleep(0.01)
            assert seen[0] is not None
            assert not seen[0].done(), "pending while the client is connected"
            writer.close()
            await left.wait()
    finally:
        server.should_exit = True
        await serving


def test_without_the_extension_there_is_no_future() -> None:
    assert disconnect_future({"type": "http"}) is None
    assert disconnect_future({"type": "http", "extensions": {"http.response.trailers": {}}}) is None
