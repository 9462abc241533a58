"""The edge limits, attacked over raw sockets against a real uvicorn server on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.core import HeadersTooLarge, SettingsError
from shared.runtime.protocol import render_error, uvicorn_options
from shared.web import EdgeSettings, build_app, error_response, read_json_object

FAST = EdgeSettings(head_timeout=0.5, body_timeout=0.5, keep_alive_timeout=0.3)
GET = b"GET /healthz HTTP/1.1\r\nHost: test\r\n"


@contextlib.asynccontextmanager
async def _nothing(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {}


async def _ready(request: Request) -> dict[str, Any]:
    return {"ok": True}


async def _echo(request: Request) -> Response:
    return JSONResponse(await read_json_object(request))


def _app(limits: EdgeSettings, *routes: Route) -> Starlette:
    return build_app(
        [Route("/echo", _echo, methods=["POST"]), *routes], lifespan=_nothing, readiness=_ready, edge=limits
    )


@contextlib.asynccontextmanager
async def serving(limits: EdgeSettings, app: Starlette | None = None) -> AsyncIterator[int]:
    """The app with :func:`uvicorn_options`, as ``shared.runtime.serve`` runs it; yields the port."""
    config = uvicorn.Config(
        app or _app(limits),
        host="127.0.0.1",
        port=0,
        log_config=None,
        timeout_graceful_shutdown=1,
        **uvicorn_options(limits),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _read_all(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """Everything until the server closes; a server that never closes fails the test."""
    async with asyncio.timeout(within):
        return await reader.read(-1)


def _parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return (
        int(lines[0].split()[1]),
        {k.lower(): v for k, v in headers.items()},
        json.loads(body) if body else None,
    )


async def _request(port: int, data: bytes) -> tuple[int, dict[str, str], Any]:
    reader, writer = await _connect(port)
    writer.write(data)
    raw = await _read_all(reader)
    writer.close()
    return _parse(raw)


def _lines(count: int, size: int = 40) -> bytes:
    return b"".join(b"X-Pad-%05d: %s\r\n" % (i, b"a" * (size - 16)) for i in range(count))


# The head: header fields counted and sized as they arrive.


async def test_one_header_field_over_the_count_is_431_and_the_cap_is_not_the_size() -> None:
    async with serving(FAST) as port:
        status, headers, body = await _request(port, GET + _lines(FAST.max_headers) + b"\r\n")
        assert status == 431
        assert body == {"error": "headers_too_large", "detail": "the request has more than 100 header fields"}
        assert headers["connection"] == "close"
        # One fewer (Host is the hundredth) is served, and is far under the byte cap.
        status, _, _ = await _request(port, GET + _lines(FAST.max_headers - 1) + b"Connection: close\r\n\r\n")
        assert len(_lines(FAST.max_headers)) < FAST.max_header_bytes
        assert status == 431
        status, _, _ = await _request(port, GET + _lines(FAST.max_headers - 2) + b"Connection: close\r\n\r\n")
        assert status == 200


async def test_header_bytes_over_the_cap_are_431_before_the_head_ends() -> None:
    limits = replace(FAST, max_headers=1000)
    async with serving(limits) as port:
        reader, writer = await _connect(port)
        # Nine lines of a kilobyte and no blank line: the head is not over, the answer is due anyway.
        writer.write(GET + _lines(9, 1024))
        status, _, body = _parse(await _read_all(reader, within=2))
        writer.close()
    assert status == 431
    assert body == {"error": "headers_too_large", "detail": "request headers exceed 8192 bytes"}


async def test_a_header_line_that_never_ends_is_cut_off_by_the_head_byte_cap() -> None:
    async with serving(FAST) as port:
        reader, writer = await _connect(port)
        writer.write(GET + b"X-Long: ")
        for _ in range(8):
            writer.write(b"a" * 4096)
        status, _, body = _parse(await _read_all(reader, within=2))
        writer.close()
    assert status == 431
    assert body["detail"] == f"the request head exceeds {FAST.max_head_bytes} bytes"


async def test_a_head_of_megabytes_is_answered_431_and_holds_no_more_than_the_cap() -> None:
    offered = 32 * 1024 * 1024
    chunk = _lines(1600)  # 64 KiB of ordinary lines per write
    async with serving(FAST) as port:
        reader, writer = await _connect(port)
        tracemalloc.start()
        try:
            writer.write(GET)

            async def flood() -> None:
                with contextlib.suppress(ConnectionError):
                    for _ in range(offered // len(chunk)):
                        writer.write(chunk)
                        await writer.drain()

            flooding = asyncio.create_task(flood())
            raw = await _read_all(reader, within=10)
            async with asyncio.timeout(10):
                await flooding
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        writer.close()
    assert _parse(raw)[0] == 431
    # Client and server together: uvicorn alone kept every parsed line, over 100 MiB for this offer.
    assert peak < 4 * 1024 * 1024, peak


# The head: a deadline from connection open or from the request's first byte.


async def test_an_unfinished_head_is_answered_408_and_closed_at_the_deadline() -> None:
    async with serving(FAST) as port:
        reader, writer = await _connect(port)
        started = time.monotonic()
        writer.write(b"GET /healthz HT")
        status, headers, body = _parse(await _read_all(reader, within=3))
        elapsed = time.monotonic() - started
        writer.close()
    assert status == 408
    assert body == {"error": "request_timeout", "detail": "the request head did not arrive within 0.5 s"}
    assert headers["connection"] == "close"
    assert 0.4 < elapsed < 2.5


async def test_a_trickled_head_does_not_extend_the_deadline() -> None:
    async with serving(FAST) as port:
        reader, writer = await _connect(port)
        started = time.monotonic()
        writer.write(GET)

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for i in range(40):
                    writer.write(b"X-Slow-%d: 1\r\n" % i)
                    await writer.drain()
                    await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        raw = await _read_all(reader, within=3)
        elapsed = time.monotonic() - started
        trickling.cancel()
        writer.close()
    assert _parse(raw)[0] == 408
    assert elapsed < 2.5, "each line must not restart the clock"


async def test_a_connection_that_never_sends_is_closed_without_an_answer() -> None:
    async with serving(FAST) as port:
        reader, writer = await _connect(port)
        assert await _read_all(reader, within=3) == b""
        writer.close()


async def test_the_next_request_on_a_kept_alive_connection_has_its_own_deadline() -> None:
    async with serving(replace(FAST, keep_alive_timeout=5)) as port:
        reader, writer = await _connect(port)
        writer.write(GET + b"\r\n")
        async with asyncio.timeout(3):
            first = await reader.readuntil(b"}")
        assert first.startswith(b"HTTP/1.1 200")
        # Idle past the first head's deadline (within keep-alive): the next head gets a clock of its own.
        await asyncio.sleep(FAST.head_timeout + 0.3)
        writer.write(b"GET /hea")
        status, _, _ = _parse(await _read_all(reader, within=3))
        writer.close()
    assert status == 408


async def test_a_head_refused_just_before_its_deadline_gets_one_answer_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving(FAST) as port:
        reader, writer = await _connect(port)
        writer.write(GET)
        await asyncio.sleep(FAST.head_timeout - 0.2)  # the refusal must fall inside the deadline
        writer.write(b"X-Long: " + b"a" * FAST.max_head_bytes)

        async def keep_sending() -> None:
            # Past the deadline, while the refused connection lingers.
            with contextlib.suppress(ConnectionError):
                for _ in range(10):
                    writer.write(b"a" * 1024)
                    await writer.drain()
                    await asyncio.sleep(0.1)

        sending = asyncio.create_task(keep_sending())
        raw = await _read_all(reader, within=3)
        await sending
        writer.close()
    assert _parse(raw)[0] == 431
    assert raw.count(b"HTTP/1.1") == 1
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# Idle connections and bodies.


async def test_an_idle_kept_alive_connection_closes_after_the_keep_alive_timeout() -> None:
    async with serving(FAST) as port:
        reader, writer = await _connect(port)
        writer.write(GET + b"\r\n")
        async with asyncio.timeout(3):
            await reader.readuntil(b"}")
        started = time.monotonic()
        # uvicorn's own default would hold it for 5 s.
        assert await _read_all(reader, within=2) == b""
        writer.close()
    assert time.monotonic() - started < 2


async def test_a_body_that_does_not_arrive_in_time_is_408_even_when_trickled() -> None:
    async with serving(FAST) as port:
        reader, writer = await _connect(port)
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(40):
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        raw = await _read_all(reader, within=3)
        elapsed = time.monotonic() - started
        trickling.cancel()
        writer.close()
    status, headers, body = _parse(raw)
    assert status == 408
    assert body == {"error": "request_timeout", "detail": "the request body did not arrive within 0.5 s"}
    assert headers["connection"] == "close"
    assert elapsed < 2.5


async def test_a_body_in_time_is_served() -> None:
    async with serving(FAST) as port:
        content = b'{"a": 1}'
        status, _, body = await _request(
            port,
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(content), content),
        )
    assert (status, body) == (200, {"a": 1})


# Concurrency per worker.


async def test_a_request_over_the_connection_cap_gets_a_fast_503_and_the_worker_recovers() -> None:
    limits = replace(FAST, max_connections=3, head_timeout=10)
    async with serving(limits) as port:
        idle = [await _connect(port) for _ in range(3)]
        started = time.monotonic()
        status, headers, body = await _request(port, GET + b"\r\n")
        assert time.monotonic() - started < 1
        assert status == 503
        assert body["error"] == "service_unavailable"
        assert headers["retry-after"] == "1"
        assert headers["connection"] == "close"
        for _, writer in idle:
            writer.close()
            await writer.wait_closed()
        async with asyncio.timeout(5):
            # Polled: the server closes the idle connections in its own time.
            while (await _request(port, GET + b"Connection: close\r\n\r\n"))[0] != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def test_a_request_over_the_in_flight_cap_gets_a_fast_503() -> None:
    release = asyncio.Event()
    both_in = asyncio.Event()
    entered = 0

    async def slow(request: Request) -> Response:
        nonlocal entered
        entered += 1
        if entered == 2:
            both_in.set()
        await release.wait()
        return JSONResponse({"done": True})

    limits = replace(FAST, max_in_flight=2, head_timeout=10)
    async with serving(limits, _app(limits, Route("/slow", slow))) as port:
        held = []
        for _ in range(2):
            reader, writer = await _connect(port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            held.append((reader, writer))
        async with asyncio.timeout(5):
            await both_in.wait()
        status, headers, _ = await _request(port, GET + b"\r\n")
        assert (status, headers["retry-after"]) == (503, "1")
        release.set()
        for reader, writer in held:
            assert _parse(await _read_all(reader))[0] == 200
            writer.close()
        assert (await _request(port, GET + b"Connection: close\r\n\r\n"))[0] == 200


# The shared middleware.


async def test_a_request_with_two_origins_is_400() -> None:
    async with serving(FAST) as port:
        twice = GET + b"Origin: http://localhost:8000\r\nOrigin: http://evil.example\r\n\r\n"
        status, _, body = await _request(port, twice)
        assert (status, body["error"]) == (400, "duplicate_origin")
        once = GET + b"Origin: http://localhost:8000\r\nConnection: close\r\n\r\n"
        assert (await _request(port, once))[0] == 200


def test_the_edge_renders_an_error_as_the_application_does() -> None:
    error = HeadersTooLarge("too much")
    raw = render_error(error)
    status, headers, body = _parse(raw)
    expected = error_response(431, "headers_too_large", "too much")
    assert (status, body) == (431, json.loads(expected.body))
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(expected.body)


# Settings.


def test_the_edge_settings_default_close_to_nginx_and_envoy() -> None:
    assert EdgeSettings.from_env({}) == EdgeSettings(
        max_headers=100,
        max_header_bytes=8192,
        max_head_bytes=16384,
        head_timeout=10.0,
        body_timeout=30.0,
        keep_alive_timeout=5.0,
        max_connections=512,
        max_in_flight=256,
    )


def test_every_edge_variable_is_read() -> None:
    environ = {
        "EDGE_MAX_HEADERS": "50",
        "EDGE_MAX_HEADER_BYTES": "4096",
        "EDGE_MAX_HEAD_BYTES": "5000",
        "EDGE_HEAD_TIMEOUT_SECONDS": "2.5",
        "EDGE_BODY_TIMEOUT_SECONDS": "3",
        "EDGE_KEEP_ALIVE_SECONDS": "1",
        "EDGE_MAX_CONNECTIONS": "10",
        "EDGE_MAX_IN_FLIGHT": "5",
    }
    assert EdgeSettings.from_env(environ) == EdgeSettings(50, 4096, 5000, 2.5, 3.0, 1.0, 10, 5)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"EDGE_MAX_HEADERS": "many"}, "EDGE_MAX_HEADERS"),
        ({"EDGE_HEAD_TIMEOUT_SECONDS": "0"}, "EDGE_HEAD_TIMEOUT_SECONDS"),
        ({"EDGE_MAX_IN_FLIGHT": "0"}, "EDGE_MAX_IN_FLIGHT"),
        ({"EDGE_MAX_HEADER_BYTES": "20000"}, "EDGE_MAX_HEAD_BYTES"),
    ],
)
def test_a_bad_edge_variable_fails_by_name(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        EdgeSettings.from_env(environ)
