"""A plain-HTTP/1.1 upstream connection on asyncio's own transports, with httptools parsing the answers.

Profiles of ``GET /api/orders`` through httpcore's HTTP/1.1 connection put a fifth of the
gateway's time in h11 (pure Python: events, state machine, validation) and its locks. This
connection does the same exchange with llhttp, the C parser uvicorn already uses for the
gateway's own requests: the request goes out as one buffer, the answer is parsed as it
arrives, and a connection is offered for reuse only after a complete answer the upstream
did not ask to close. Errors are httpcore's, so the pool's TLS connections (still httpcore's)
and these fail in the same vocabulary.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence

import httpcore
import httptools

RawHeaders = Sequence[tuple[bytes, bytes]]

# Reading pauses while this much body is buffered and unread (a client slower than the upstream),
# and resumes below the low mark, so a streamed answer never piles up in the gateway's memory.
READ_HIGH_WATER = 256 * 1024
READ_LOW_WATER = 64 * 1024

# An answer's head larger than this (h11 allows 16 KiB) is a broken upstream, not a bigger buffer.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 256

# What h11 would refuse to write (RFC 9110 5.1, 5.5): a name that is not a token, or a value with
# control characters (a line break is header injection) or with whitespace at either end.
# One character class searched, not a pattern matched: values carry 1 KB tokens on every request.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_BLANK = (b" ", b"\t")


def request_head(method: bytes, target: bytes, headers: RawHeaders) -> bytes:
    """The request line and headers as one buffer; :class:`httpcore.LocalProtocolError` if any is unsafe."""
    if _TOKEN.fullmatch(method) is None or _TARGET.fullmatch(target) is None:
        raise httpcore.LocalProtocolError("illegal request line")
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if (
            _TOKEN.fullmatch(name) is None
            or _CONTROL.search(value) is not None
            or value[:1] in _BLANK
            or value[-1:] in _BLANK
        ):
            raise httpcore.LocalProtocolError("illegal header")
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class Connection(asyncio.Protocol):
    """One TCP connection to an upstream, carrying one exchange at a time.

    :meth:`request` sends a request and waits for the answer's head; :meth:`aiter_body` then
    yields its body as it arrives; :meth:`finish` ends the exchange. The connection is reused
    only after a complete answer with keep-alive, and only until ``keepalive_expiry``.
    """

    def __init__(self, keepalive_expiry: float) -> None:
        self._keepalive_expiry = keepalive_expiry
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._error: Exception | None = None
        self._expires_at: float | None = None
        self._head_only = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._head_done = False
        self._complete = False
        self._keep_alive = False
        # No length and no chunking: the body ends when the upstream closes (RFC 9112 6.3).
        self._delimited = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        if self._expires_at is not None:
            # Bytes on an idle connection answer nothing that was asked: it cannot be trusted again.
            self._fail(httpcore.RemoteProtocolError("the upstream sent data on an idle connection"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, httpcore.RemoteProtocolError):
                self._fail(cause)
            else:
                self._fail(httpcore.RemoteProtocolError(f"malformed response: {type(exc).__name__}"))
        except httptools.HttpParserUpgrade:
            # The gateway never asks for an upgrade (Upgrade is hop-by-hop and dropped).
            self._fail(httpcore.RemoteProtocolError("unexpected protocol upgrade"))
        if self._buffered > READ_HIGH_WATER and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._on_end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._on_end()
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # httptools callbacks

    def on_status(self, status: bytes) -> None:
        self._count_head(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        if len(self.headers) >= MAX_HEADERS:
            raise httpcore.RemoteProtocolError("too many response headers")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim answer (103 Early Hints): the final one follows on the same connection.
            self.headers = []
            self._head_bytes = 0
            return
        self.status = status
        self._head_done = True
        framed = any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers)
        self._delimited = not framed and status not in (204, 304) and not self._head_only
        if self._head_only:
            # llhttp cannot be told a HEAD answer has no body; the connection is not reused after it.
            self._complete = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        if not self._head_done:
            return  # the end of an interim answer
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()

    # the exchange

    async def request(
        self, method: bytes, target: bytes, headers: RawHeaders, body: bytes | None, *, io_timeout: float
    ) -> None:
        """Send one request and wait for the head of its answer (then in :attr:`status`, :attr:`headers`)."""
        head = request_head(method, target, headers)
        transport = self._transport
        if transport is None or transport.is_closing() or self._closed:
            raise httpcore.WriteError("the connection is closed")
        self._reset()
        self._expires_at = None
        self._head_only = method == b"HEAD"
        transport.write(head + body if body else head)
        if self._writing_paused:
            await self._drain(io_timeout)
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait(io_timeout)

    async def aiter_body(self, *, io_timeout: float) -> AsyncIterator[bytes]:
        """The answer's body as it arrives; raises if the upstream breaks off before its end."""
        while True:
            if self._chunks:
                yield self._take()
            elif self._complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait(io_timeout)

    def is_reusable(self) -> bool:
        """True when the last exchange ended cleanly and the upstream keeps the connection open."""
        return (
            self._complete
            and self._keep_alive
            and not self._head_only
            and not self._chunks
            and self._error is None
            and not self._closed
        )

    async def finish(self) -> None:
        """End the exchange: a reusable connection starts its keep-alive clock, any other closes."""
        if self.is_reusable():
            self._expires_at = time.monotonic() + self._keepalive_expiry
        else:
            self.close()

    def has_expired(self) -> bool:
        """True when idle past the keep-alive expiry, or closed by the upstream while idle."""
        return (
            self._closed
            or self._error is not None
            or (self._expires_at is not None and time.monotonic() > self._expires_at)
        )

    def close(self) -> None:
        """Close the connection now."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    async def aclose(self) -> None:
        """Close the connection now (the pool's interface for every kind of connection)."""
        self.close()

    # internals

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise httpcore.RemoteProtocolError("response head too large")

    def _on_end(self) -> None:
        if self._head_done and self._delimited and not self._complete:
            self._complete = True  # a body delimited by the end of the connection
        elif self._error is None:
            # Whatever was in flight is cut short; an idle connection is simply gone.
            self._error = httpcore.RemoteProtocolError("the upstream closed the connection")
        self._keep_alive = False
        self._wake()

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._wake()
        self.close()

    def _take(self) -> bytes:
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._reading_paused and self._buffered <= READ_LOW_WATER and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        return data

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, io_timeout: float) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(io_timeout):
                await waiter
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no data within {io_timeout} s") from None
        finally:
            self._waiter = None

    async def _drain(self, io_timeout: float) -> None:
        waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(io_timeout):
                await waiter
        except TimeoutError:
            raise httpcore.WriteTimeout(f"not written within {io_timeout} s") from None
        finally:
            self._drain_waiter = None
        if self._closed:
            raise httpcore.WriteError("the upstream closed the connection")


async def connect(host: str, port: int, *, io_timeout: float, keepalive_expiry: float) -> Connection:
    """A new :class:`Connection`; :class:`httpcore.ConnectError` or ``ConnectTimeout`` when it cannot open."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(io_timeout):
            transport, connection = await loop.create_connection(
                lambda: Connection(keepalive_expiry), host, port
            )
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"no connection within {io_timeout} s") from None
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # asyncio sets TCP_NODELAY on TCP transports already; said again so it never depends on that.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection
