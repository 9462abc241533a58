"""One pipelined connection to a Redis server, for the one command each session request sends.

redis-py's general path takes a pooled connection per command and reads through asyncio
streams, wrapped in a task per write for its timeout: about 120 us of CPU per round trip here.
A :class:`Link` instead keeps one socket per process that every concurrent request writes to,
and hiredis matches the replies to the callers in order (Redis answers in the order it reads):
about 50 us. It knows only what the session path needs: a server by address or Unix socket,
optional ``AUTH`` and ``SELECT``, a deadline per call, and a fresh socket after any failure.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
from redis.exceptions import (
    ConnectionError,
    InvalidResponse,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

# Where to connect: ("tcp", host, port) or ("unix", path, 0), asked again for every new socket so
# that behind Sentinel a reconnection finds the current primary.
Address = tuple[str, str, int]


def reply_error(message: str) -> ResponseError:
    """The exception an error reply stands for; hiredis hands it back as a value, not raised."""
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith("READONLY"):
        return ReadOnlyError(message)
    return ResponseError(message)


def pack(parts: list[bytes]) -> bytes:
    """A command in the Redis protocol (RESP), from its already encoded parts."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(part), part) for part in parts)


class _Protocol(asyncio.Protocol):
    """The socket: commands written as they come, each reply handed to the oldest waiting caller."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=reply_error, encoding="utf-8")
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                waiter = self._waiting.popleft()
                # A caller whose deadline passed has gone; its reply is read and dropped.
                if not waiter.done():
                    waiter.set_result(reply)
        except (InvalidResponse, IndexError):
            # A reply nobody asked for, or bytes that are no reply: nothing after it can be trusted.
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = ConnectionError("Connection to Redis lost")
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.closed or self._transport is None:
            raise ConnectionError("Connection to Redis closed")
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._transport.write(command)
        return waiter

    def close(self) -> None:
        if not self.closed and self._transport is not None:
            self._transport.close()
        self.closed = True


class Link:
    """One pipelined connection to the server ``locate`` names, opened on first use and after failures.

    ``current``, if given, is asked before each call whether the open socket's address is still
    the right one (behind Sentinel: still the primary); when it is not, the socket is replaced.
    A call fails with redis-py's exceptions: ConnectionError when the server cannot be reached
    or the socket breaks (every call waiting on it fails, and the next opens a new socket),
    TimeoutError after ``timeout`` seconds (the socket is closed: a server that stopped answering
    gets no further commands queued behind the lost ones), an error reply as its ResponseError.
    """

    def __init__(
        self,
        locate: Callable[[], Awaitable[Address]],
        *,
        timeout: float | None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        current: Callable[[Address], bool] | None = None,
    ):
        self._locate = locate
        self._current = current
        self._timeout = timeout
        self._handshake = self._handshake_commands(username, password, db)
        self._protocol: _Protocol | None = None
        self._address: Address = ("tcp", "", 0)
        self._opening: asyncio.Lock | None = None

    @property
    def address(self) -> Address | None:
        """Where the open socket goes, or None when there is none."""
        protocol = self._protocol
        return None if protocol is None or protocol.closed else self._address

    async def call(self, command: bytes) -> Any:
        """Send one packed command and return its reply, within one deadline for both."""
        protocol = self._protocol
        try:
            async with asyncio.timeout(self._timeout):
                if protocol is not None and self._current is not None and not self._current(self._address):
                    self.close()
                    protocol = None
                if protocol is None or protocol.closed:
                    protocol = await self._open()
                reply = await protocol.send(command)
        except TimeoutError:
            # The socket this call waited on, not one a later call may have opened since.
            if protocol is not None:
                protocol.close()
                if self._protocol is protocol:
                    self._protocol = None
            raise RedisTimeoutError("Timeout waiting for Redis") from None
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def close(self) -> None:
        """Close the socket; calls waiting on it fail, and the next call opens a new one."""
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None

    async def _open(self) -> _Protocol:
        if self._opening is None:
            self._opening = asyncio.Lock()
        # Concurrent first calls share one new socket rather than each opening its own.
        async with self._opening:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            address = await self._locate()
            loop = asyncio.get_running_loop()
            try:
                if address[0] == "unix":
                    _, protocol = await loop.create_unix_connection(_Protocol, address[1])
                else:
                    _, protocol = await loop.create_connection(_Protocol, address[1], address[2])
            except OSError as exc:
                raise ConnectionError(f"Error connecting to Redis: {exc.strerror or exc}") from None
            try:
                for command in self._handshake:
                    reply = await protocol.send(command)
                    if isinstance(reply, ResponseError):
                        raise ConnectionError(f"Redis refused the connection's setup: {reply}")
            except BaseException:
                protocol.close()
                raise
            self._protocol, self._address = protocol, address
            return protocol

    @staticmethod
    def _handshake_commands(username: str | None, password: str | None, db: int) -> list[bytes]:
        commands = []
        if password is not None:
            credentials = [password] if username is None else [username, password]
            commands.append(pack([b"AUTH", *(part.encode() for part in credentials)]))
        if db:
            commands.append(pack([b"SELECT", str(db).encode()]))
        return commands
