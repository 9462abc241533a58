"""The HTTP/1.1 protocol every service runs under uvicorn: httptools, no Nagle, one write per response,
and the edge limits that must hold before any application code runs.

Profiles of the benchmark's small responses (a health check, a verified ``/whoami``) showed a
third of the server's time inside the two ``send`` system calls uvicorn makes per response,
one for the head and one for the body: on loopback and on a LAN each write also runs the
TCP path towards the peer. Joining the writes of one event-loop step makes them one call.

uvicorn hands a request to the application only once its head is complete, and until then
keeps every header line it parsed: one connection sending 64 MiB of ordinary header lines
grew a service by 67 MiB, and a head that never ends was never timed out. So the head is
counted here, in the parser's callbacks and as bytes arrive, and refused as soon as it
crosses a limit. This is every request's path: the checks are a few integer comparisons per
header and per read, one clock read per request, and at most one timer per connection per
head deadline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from shared.core.errors import ApiError, HeadersTooLarge, RequestTimeout, ServiceUnavailable
from shared.web.disconnect import DISCONNECT_EXTENSION, DRAINING_EXTENSION
from shared.web.edge import RETRY_AFTER_SECONDS, EdgeSettings
from shared.web.responses import error_response

logger = logging.getLogger("shared.web.edge")

#: How long a refused connection is still read (and what it sends dropped) after its answer.
#: Closing at once, with the client's bytes unread, resets the connection, and the reset can
#: destroy the answer before the client reads it: nginx's "lingering close", bounded in time.
LINGER_SECONDS = 2.0


class CoalescingTransport(asyncio.Transport):
    """Wraps a transport so that the writes of one event-loop step leave in one ``write``.

    Order is kept, and nothing waits longer than the current step: the join is flushed by a
    callback scheduled with the step's first write, and before the transport closes.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        #: Asked before closing; True means the protocol has closed the connection its own way.
        self.before_close: Callable[[], bool] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand everything written so far to the wrapped transport."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        if self.before_close is not None and self.before_close():
            return
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


def render_error(error: ApiError) -> bytes:
    """``error`` as a whole HTTP/1.1 response that closes the connection.

    For answers the edge gives before any application runs; the body and headers are the ones
    :func:`shared.web.responses.error_response` renders for the same error inside an application.
    """
    response = error_response(
        error.status, error.code, error.detail, {**error.headers, "Connection": "close"}
    )
    lines = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n".encode("ascii")]
    lines += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
    return b"".join([*lines, b"\r\n", response.body])


@functools.cache
def _overloaded() -> bytes:
    # The same bytes for every refusal: under a flood, answering must cost less than queueing.
    return render_error(
        ServiceUnavailable(
            "the service is at its connection or request limit; try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    )


def _refusal(error: ApiError) -> bytes:
    logger.info("refused a request head: %s", error.detail)
    return render_error(error)


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request the edge refuses."""


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with TCP_NODELAY on every connection, coalesced writes, and edge limits.

    With ``workers > 1`` uvicorn binds the listening socket itself as ``socket(family)``,
    whose ``proto`` is 0, and asyncio only sets TCP_NODELAY on sockets whose ``proto`` is
    IPPROTO_TCP. A response written in two pieces then waited for the client's delayed ACK:
    about 40 ms per request, a sevenfold throughput loss measured with two workers against one.

    ``limits`` (see :func:`uvicorn_options`) bounds each request head in header fields, in bytes
    and in time (431 or 408, then the connection closes), and answers a request that finds the
    worker at its connection or in-flight cap with an immediate 503 and ``Retry-After``.

    Every request's scope carries the connection's loss as a future (see
    :mod:`shared.web.disconnect`), so an application can watch for its client leaving without a
    task of its own.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: EdgeSettings | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = limits or EdgeSettings()
        # Plain attributes, read on every header and every read.
        self._max_headers = limits.max_headers
        self._max_header_bytes = limits.max_header_bytes
        self._max_head_bytes = limits.max_head_bytes
        self._head_timeout = limits.head_timeout
        self._max_connections = limits.max_connections
        self._max_in_flight = limits.max_in_flight
        # When the head being read started (connection open or its first byte); None between heads.
        self._head_since: float | None = None
        self._head_begun = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._field_count = 0
        self._field_bytes = 0
        # The answer a parser callback refused the request with, written once parsing has stopped.
        self._refusal: bytes | None = None
        self._discarding = False
        self._linger: asyncio.TimerHandle | None = None
        # Completed in connection_lost; every request on the connection is handed it.
        self._lost: asyncio.Future[None] = self.loop.create_future()
        # Completed when the server starts shutting down: a request held open on purpose (a
        # long-poll) answers at once instead of holding the shutdown for its graceful timeout.
        self._draining: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        coalescing.before_close = self._linger_if_unread
        super().connection_made(coalescing)
        # uvicorn arms no timer until a first response: a connection that never sends was never closed.
        self._head_since = self.loop.time()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_deadline)

    def shutdown(self) -> None:
        if not self._draining.done():
            self._draining.set_result(None)
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._linger):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._linger = None
        if not self._lost.done():
            self._lost.set_result(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, with the head counted as it arrives and refusals answered.
        if self._discarding:
            return
        self._unset_keepalive_if_required()
        if self._head_since is not None:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        # Counted per read, so a header line that never ends is cut off too; the parser would keep it all.
        if self._head_since is not None and self._head_bytes > self._max_head_bytes:
            self._refuse(_refusal(HeadersTooLarge(f"the request head exceeds {self._max_head_bytes} bytes")))

    def on_message_begin(self) -> None:
        if self._head_since is None:
            self._head_since = self.loop.time()
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._head_timeout, self._head_deadline)
        self._head_begun = True
        self._field_count = 0
        self._field_bytes = 0
        super().on_message_begin()
        # uvicorn types the extensions as dicts; ASGI leaves their values to whoever defines them.
        extensions: dict[str, Any] = {DISCONNECT_EXTENSION: self._lost, DRAINING_EXTENSION: self._draining}
        self.scope["extensions"] = extensions

    def on_header(self, name: bytes, value: bytes) -> None:
        self._field_count += 1
        self._field_bytes += len(name) + len(value) + 4
        if self._field_count > self._max_headers:
            self._refusal = _refusal(
                HeadersTooLarge(f"the request has more than {self._max_headers} header fields")
            )
            raise _Refused
        if self._field_bytes > self._max_header_bytes:
            self._refusal = _refusal(
                HeadersTooLarge(f"request headers exceed {self._max_header_bytes} bytes")
            )
            raise _Refused
        # uvicorn's own, inline: one Python call less per header.
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_since = None
        self._head_begun = False
        self._head_bytes = 0
        idle = self.cycle is None or self.cycle.response_complete
        if idle and (len(self.connections) > self._max_connections or len(self.tasks) >= self._max_in_flight):
            logger.info(
                "refused a request: %d connections, %d in flight", len(self.connections), len(self.tasks)
            )
            self._refusal = _overloaded()
            raise _Refused
        super().on_headers_complete()

    def _head_deadline(self) -> None:
        self._head_timer = None
        since = self._head_since
        if since is None or self._discarding or self.transport.is_closing():
            return
        remaining = since + self._head_timeout - self.loop.time()
        if remaining > 0:
            # One timer per connection, moved on lazily: a request that finished its head in time
            # cost no timer of its own.
            self._head_timer = self.loop.call_later(remaining, self._head_deadline)
            return
        if not self._head_begun and self._head_bytes == 0:
            # Nothing asked, so nothing to answer: an answer nobody asked for could be read as
            # the reply to a request the client is about to send.
            self.transport.close()
            return
        self._refuse(
            _refusal(RequestTimeout(f"the request head did not arrive within {self._head_timeout:g} s"))
        )

    def _refuse(self, response: bytes) -> None:
        self._refusal = None
        self._head_since = None
        self._discarding = True
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is being written on this connection; a second would interleave with it.
            # It is the last one: the connection closes after it, and nothing more is read.
            self.cycle.keep_alive = False
            self.transport.pause_reading()
            return
        self.transport.write(response)
        self._close_lingering()

    def _linger_if_unread(self) -> bool:
        # uvicorn closes after an answer given before the body was all read (a 413, a 408): the
        # client may still be sending it.
        cycle = self.cycle
        if self._linger is not None or cycle is None or not cycle.more_body or self.transport.is_closing():
            return False
        self._close_lingering()
        return True

    def _close_lingering(self) -> None:
        # Half-close: the answer and a FIN go out; what the client still sends is read and dropped
        # until it closes too (eof_received) or the linger ends.
        self._discarding = True
        self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.abort)


def uvicorn_options(limits: EdgeSettings) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that run :class:`HttpProtocol` with ``limits``."""
    return {
        # A partial, not a subclass made here: worker processes receive the config pickled.
        "http": functools.partial(HttpProtocol, limits=limits),
        "timeout_keep_alive": limits.keep_alive_timeout,
        # uvicorn's own cap answers in plain text; HttpProtocol applies ours.
        "limit_concurrency": None,
    }
