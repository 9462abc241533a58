"""Upstream connections: one bounded pool per upstream name, of lean HTTP/1.1 connections.

Why not one ``httpx.AsyncClient`` for every upstream: with a single pool, clients that never
read a large answer from orders held every connection, and logins and the JWKS (auth) then
waited 10 s for a connection and ended in a misleading 504. A pool per upstream bounds what
one upstream's traffic can hold, and a request that finds its pool full waits at most the pool
timeout before a 503 that says so.

Why not httpx's client and pool: profiles of ``GET /api/orders`` put most of the gateway's
time in those layers (URL and header models, a cookie jar to disable, and a pool that checks
every connection's socket on every request), none of which a proxy that forwards raw bytes
needs. Plain-HTTP upstreams (the usual case, inside one network) use the gateway's own
connection with httptools' C parser (services/gateway/network.py); TLS upstreams use
httpcore's HTTP/1.1 connection, the transport httpx itself uses.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpcore
import httpx

from services.gateway.network import Connection, connect

logger = logging.getLogger(__name__)

RawHeaders = Sequence[tuple[bytes, bytes]]

# Below uvicorn's 5 s keep-alive, so the pool drops an idle connection before the upstream does.
KEEPALIVE_EXPIRY_SECONDS = 4.0

# Upstream answers arrive in pieces of up to this size; uvicorn writes each on as it comes.
READ_CHUNK_BYTES = 64 * 1024

# Every upstream connection without Nagle: a request head and a small body go out at once.
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class PoolExhausted(Exception):
    """No connection of the upstream's pool came free within the pool timeout."""


@dataclass(frozen=True)
class Limits:
    """How many connections one upstream may have, and how long each step may take."""

    max_connections: int
    # Seconds a request waits for a free connection before it is refused (503).
    pool_timeout: float
    connect_timeout: float
    # Seconds each read from or write to the upstream may take (504 beyond).
    timeout: float
    keepalive_expiry: float = KEEPALIVE_EXPIRY_SECONDS


@dataclass(frozen=True)
class Origin:
    """An upstream origin, parsed once: its URL, what httpcore addresses and what ``Host`` names."""

    url: str
    core: httpcore.Origin = field(hash=False, compare=False)
    # The host and port as the URL wrote them, for the ``Host`` header.
    netloc: bytes

    @classmethod
    def parse(cls, url: str) -> Origin:
        """The origin of ``http(s)://host[:port]``; the settings have already checked its shape."""
        parts = urlsplit(url)
        scheme = parts.scheme.encode("ascii")
        port = parts.port or (443 if scheme == b"https" else 80)
        core = httpcore.Origin(scheme, (parts.hostname or "").encode("ascii"), port)
        return cls(url=url, core=core, netloc=parts.netloc.encode("ascii"))


class _CoreConnection:
    """An httpcore HTTP/1.1 connection (TLS, or a test's network) with :class:`Connection`'s methods."""

    def __init__(
        self, origin: httpcore.Origin, connection: httpcore.AsyncHTTP11Connection, timeouts: dict[str, float]
    ):
        self._origin = origin
        self._connection = connection
        self._timeouts = timeouts
        self._response: httpcore.Response | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []

    async def request(
        self, method: bytes, target: bytes, headers: RawHeaders, body: bytes | None, *, io_timeout: float
    ) -> None:
        core = self._origin
        request = httpcore.Request(
            method,
            httpcore.URL(scheme=core.scheme, host=core.host, port=core.port, target=target),
            headers=list(headers),
            content=body,
            extensions={"timeout": {**self._timeouts, "read": io_timeout}},
        )
        self._response = await self._connection.handle_async_request(request)
        self.status = self._response.status
        self.headers = self._response.headers

    async def aiter_body(self, *, io_timeout: float) -> AsyncIterator[bytes]:
        assert self._response is not None
        async for chunk in self._response.aiter_stream():
            yield chunk

    async def finish(self) -> None:
        # httpcore closes a connection whose exchange did not end cleanly (a body left unread).
        if self._response is not None:
            await self._response.aclose()

    def is_reusable(self) -> bool:
        return self._connection.is_idle()

    def has_expired(self) -> bool:
        # Expired, or closed by the upstream while idle (its socket reads as ready, at EOF).
        return self._connection.has_expired() or not self._connection.is_idle()

    async def aclose(self) -> None:
        await self._connection.aclose()


UpstreamConnection = Connection | _CoreConnection


class Reply:
    """An upstream response whose body is not yet read; :meth:`aclose` gives the connection back."""

    def __init__(self, pool: UpstreamPool, origin: Origin, connection: UpstreamConnection):
        self.status = connection.status
        self.headers: list[tuple[bytes, bytes]] = connection.headers
        self.pool = pool
        self._origin = origin
        self._connection = connection
        self._released = False

    def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, still in its content coding."""
        return self._connection.aiter_body(io_timeout=self.pool.limits.timeout)

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([chunk async for chunk in self.aiter_raw()])

    @property
    def is_closed(self) -> bool:
        return self._released

    async def aclose(self) -> None:
        """Release the connection: back to the pool when the exchange ended cleanly, else closed."""
        if self._released:
            return
        self._released = True
        try:
            await self._connection.finish()
        finally:
            await self.pool.release(self._origin, self._connection)


class UpstreamPool:
    """Connections to the origins of one upstream name (``auth``), at most ``max_connections`` in all.

    A connection is taken for one exchange and given back when its response is closed; idle
    ones are kept per origin for reuse until their keep-alive expires. A request that finds
    every connection taken waits up to ``pool_timeout`` and then gets :class:`PoolExhausted`.
    """

    def __init__(
        self,
        name: str,
        urls: Sequence[str],
        limits: Limits,
        *,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ):
        self.name = name
        self.origins = {url: Origin.parse(url) for url in urls}
        self.limits = limits
        # Plain HTTP on the gateway's own connection (services/gateway/network.py); TLS, or a test's
        # mock network, through httpcore's.
        self._core_backend = network_backend
        self._slots = asyncio.Semaphore(limits.max_connections)
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self._idle_count = 0
        self.in_use = 0
        # Counters for the metrics: requests refused for want of a connection, streamed answers
        # cut off because the client did not read them, and exchanges abandoned by their client.
        self.exhausted = 0
        self.client_send_timeouts = 0
        self.abandoned = 0
        self._closed = False
        self._ssl_context: ssl.SSLContext | None = None
        self._timeouts = {
            "connect": limits.connect_timeout,
            "read": limits.timeout,
            "write": limits.timeout,
            "pool": limits.pool_timeout,
        }

    @property
    def idle(self) -> int:
        """Open connections waiting for their next exchange."""
        return self._idle_count

    async def request(
        self,
        origin: Origin,
        method: bytes,
        target: bytes,
        headers: RawHeaders,
        body: bytes | None,
        *,
        holds: float = 0.0,
    ) -> Reply:
        """Send one request to ``origin`` and return its :class:`Reply` once the head has arrived.

        The head may take the timeout plus ``holds`` (a route whose upstream long-polls).

        Raises :class:`PoolExhausted`, or httpcore's errors: ``ConnectError``/``ConnectTimeout``
        (nothing was sent), ``ReadTimeout``/``WriteTimeout``, ``LocalProtocolError`` (refused
        before sending) and the other network and protocol errors.
        """
        await self._acquire()
        connection: UpstreamConnection | None = None
        try:
            connection = await self._connection_for(origin)
            await connection.request(method, target, headers, body, io_timeout=self.limits.timeout + holds)
        except BaseException:
            # Cancelled (the client left) or failed: the connection may hold half an exchange.
            if connection is not None:
                await _close_quietly(connection)
            self._free_slot()
            raise
        return Reply(self, origin, connection)

    async def _acquire(self) -> None:
        if not self._slots.locked():
            # The usual case, without the cost of a timeout: a slot is free now.
            await self._slots.acquire()
        else:
            try:
                async with asyncio.timeout(self.limits.pool_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                self.exhausted += 1
                raise PoolExhausted(self.name) from None
        self.in_use += 1

    def _free_slot(self) -> None:
        self.in_use -= 1
        self._slots.release()

    async def _connection_for(self, origin: Origin) -> UpstreamConnection:
        idle = self._idle.get(origin.url)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.has_expired():
                await _close_quietly(connection)
                continue
            return connection
        await self._make_room()
        host = origin.core.host.decode("ascii")
        tls = origin.core.scheme == b"https"
        expiry = self.limits.keepalive_expiry
        if not tls and self._core_backend is None:
            return await connect(
                host, origin.core.port, io_timeout=self.limits.connect_timeout, keepalive_expiry=expiry
            )
        backend = self._core_backend or httpcore.AnyIOBackend()
        stream = await backend.connect_tcp(
            host, origin.core.port, timeout=self.limits.connect_timeout, socket_options=_SOCKET_OPTIONS
        )
        if tls:
            try:
                stream = await stream.start_tls(
                    self._tls_context(), server_hostname=host, timeout=self.limits.connect_timeout
                )
            except BaseException:
                await stream.aclose()
                raise
        core = httpcore.AsyncHTTP11Connection(origin.core, stream, keepalive_expiry=expiry)
        return _CoreConnection(origin.core, core, self._timeouts)

    def _tls_context(self) -> ssl.SSLContext:
        # What httpx verifies against by default (certifi's roots), made once and only when needed.
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        return self._ssl_context

    async def _make_room(self) -> None:
        # Open connections stay within the limit: a new one replaces an idle one to another origin.
        while self._idle_count and self._idle_count + self.in_use > self.limits.max_connections:
            for connections in self._idle.values():
                if connections:
                    self._idle_count -= 1
                    await _close_quietly(connections.pop(0))
                    break

    async def release(self, origin: Origin, connection: UpstreamConnection) -> None:
        """Give a connection back after its exchange was finished (by :meth:`Reply.aclose`).

        Only one whose exchange ended cleanly (the whole answer read, keep-alive) is kept; any
        other (a body left unread, a broken or truncated answer) is closed.
        """
        if connection.is_reusable() and not self._closed:
            self._idle.setdefault(origin.url, []).append(connection)
            self._idle_count += 1
        else:
            await _close_quietly(connection)
        self._free_slot()

    async def aclose(self) -> None:
        """Close every idle connection; connections still in use close when released."""
        self._closed = True
        for connections in self._idle.values():
            while connections:
                await _close_quietly(connections.pop())
        self._idle_count = 0


async def _close_quietly(connection: UpstreamConnection) -> None:
    try:
        await connection.aclose()
    except Exception:  # a socket that fails to close is gone either way
        logger.debug("closing an upstream connection failed", exc_info=True)
