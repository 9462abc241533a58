"""Upstream I/O: the pools, the buffered request body, the balanced send, the answer to the client."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType

import httpcore
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from services.gateway.balancer import Pool, may_retry_after_send
from services.gateway.settings import GatewaySettings
from services.gateway.upstream import Limits, PoolExhausted, Reply, UpstreamPool
from shared.core import BadGateway, BadRequest, GatewayTimeout, RequestTimeout, ServiceUnavailable

logger = logging.getLogger(__name__)


def limits_for(settings: GatewaySettings, name: str) -> Limits:
    """The connection limits of upstream ``name`` from the settings."""
    return Limits(
        max_connections=settings.max_connections_for(name),
        pool_timeout=settings.upstream_pool_timeout,
        connect_timeout=min(settings.upstream_connect_timeout, settings.upstream_timeout),
        timeout=settings.upstream_timeout,
    )


@asynccontextmanager
async def open_pools(settings: GatewaySettings) -> AsyncIterator[dict[str, UpstreamPool]]:
    """One connection pool per upstream name, each with its own limit; closed on exit.

    Nothing here follows redirects, reads proxy variables from the environment or keeps
    cookies: a pool forwards exactly the request it is given and returns the raw answer.
    """
    pools = {
        name: UpstreamPool(name, urls, limits_for(settings, name))
        for name, urls in settings.upstream_urls().items()
    }
    async with AsyncExitStack() as stack:
        for pool in pools.values():
            stack.push_async_callback(pool.aclose)
        yield pools


async def read_body(request: Request, *, within: float) -> bytes:
    """The whole request body within ``within`` seconds, or :class:`RequestTimeout` (408).

    This is what nginx calls request buffering: the body is in hand before an upstream
    connection is taken, so a client that trickles its body ties up only its own socket, never
    one of the pooled connections every other request needs. The shared LimitsMiddleware caps
    its size (413); a client that hangs up raises ``ClientDisconnect``, which the shared handler
    answers without calling it an error.
    """
    try:
        async with asyncio.timeout(within):
            return await request.body()
    except TimeoutError:
        logger.info("request body not received within %g s", within)
        # Closing is what a 408 means (RFC 9110 15.5.9); kept open, the socket would still trickle.
        raise RequestTimeout(
            f"the request body did not arrive within {within:g} seconds", headers={"Connection": "close"}
        ) from None


class ClientGone(Exception):
    """The client disconnected while the gateway was working on its request."""


class DisconnectWatch:
    """Cancels the task that enters it when the client disconnects, and raises :class:`ClientGone`.

    ASGI tells an application about a disconnect only through ``receive``, and only when asked:
    without this, a client that gave up would leave the gateway waiting for the upstream (and
    holding one of its connections) until the upstream answered or timed out. The watcher asks
    in a task of its own. It must be left before the final part of the response is sent,
    because uvicorn answers ``receive`` with a disconnect once the response is complete.
    """

    def __init__(self, receive: Receive):
        self._receive = receive
        self._task: asyncio.Task[object] | None = None
        self._watcher: asyncio.Future[None] | None = None
        self._inside = False
        self.disconnected = False

    async def __aenter__(self) -> DisconnectWatch:
        self._task = asyncio.current_task()
        self._inside = True
        self._watcher = asyncio.ensure_future(self._wait())
        self._watcher.add_done_callback(self._on_done)
        return self

    async def _wait(self) -> None:
        message: Message = await self._receive()
        while message["type"] != "http.disconnect":
            message = await self._receive()

    def _on_done(self, watcher: asyncio.Future[None]) -> None:
        if (
            self._inside
            and not watcher.cancelled()
            and watcher.exception() is None
            and self._task is not None
        ):
            self.disconnected = True
            self._task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._inside = False
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
        if self.disconnected and self._task is not None:
            self._task.uncancel()
            if exc_type is asyncio.CancelledError:
                raise ClientGone from None


class UpstreamResponse(Response):
    """Streams an upstream answer to the client and always gives its connection back.

    Each piece must be taken by the client within ``send_timeout`` seconds: uvicorn's ``send``
    waits while the socket's buffers are full, so a client that never reads would otherwise
    hold the upstream connection for as long as it stays connected. Past the deadline the
    answer is abandoned (the connection to the client is closed, as the response is cut short)
    and the upstream connection is released. A client that disconnects stops the stream at once.
    """

    def __init__(self, reply: Reply, headers: list[tuple[bytes, bytes]], *, send_timeout: float):
        self.status_code = reply.status
        # Raw pairs, not a mapping, so that every Set-Cookie survives.
        self.raw_headers = headers
        self.background = None
        self._reply = reply
        self._send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reply = self._reply
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            async with DisconnectWatch(receive):
                async for chunk in reply.aiter_raw():
                    async with asyncio.timeout(self._send_timeout):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except ClientGone:
            reply.pool.abandoned += 1
            logger.info("client disconnected during a streamed %s answer", reply.pool.name)
            return
        except TimeoutError:
            reply.pool.client_send_timeouts += 1
            # Returning without finishing the response makes uvicorn close the client's connection.
            logger.warning(
                "client did not read a streamed %s answer within %g s; abandoned",
                reply.pool.name,
                self._send_timeout,
            )
            return
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException) as exc:
            logger.warning("upstream %s failed in its streamed body: %s", reply.pool.name, type(exc).__name__)
            return
        finally:
            await reply.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The upstream's Content-Length when it is one plain number, else None."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def respond(
    reply: Reply, headers: list[tuple[bytes, bytes]], *, buffer_bytes: int, send_timeout: float
) -> Response:
    """The client's response: bodies up to ``buffer_bytes`` read whole (raw, still encoded), others streamed.

    Read whole, the answer gives the upstream connection back at once, and the client gets a
    plain response whose writing holds nothing upstream however slowly it reads (nginx's
    proxy_buffering). Larger answers, and ones of unknown length, stream under a send deadline.
    """
    length = declared_length(reply.headers)
    if length is None or length > buffer_bytes:
        return UpstreamResponse(reply, headers, send_timeout=send_timeout)
    name = reply.pool.name
    try:
        body = await reply.read()
    except httpcore.TimeoutException as exc:
        logger.warning("upstream %s timed out in its body: %s", name, type(exc).__name__)
        raise GatewayTimeout(f"the {name} service did not answer in time") from None
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        logger.warning("upstream %s failed in its body: %s", name, type(exc).__name__)
        raise BadGateway(f"the {name} service sent a broken response") from None
    finally:
        await reply.aclose()
    response = Response(body, status_code=reply.status)
    # Raw pairs, as the upstream sent them (Content-Length included), so every Set-Cookie survives.
    response.raw_headers = headers
    return response


HeadersFor = Callable[[bytes], list[tuple[bytes, bytes]]]

# A first try and one retry: enough to step over one dead origin, never a retry storm.
MAX_ATTEMPTS = 2

# Methods whose requests carry a body by definition; sent with an explicit zero length when empty.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def framed(headers: list[tuple[bytes, bytes]], method: str, body: bytes | None) -> list[tuple[bytes, bytes]]:
    """``headers`` with the gateway's own Content-Length for the body it buffered."""
    if body is not None:
        headers.append((b"content-length", str(len(body)).encode("ascii")))
    elif method in _BODY_METHODS:
        headers.append((b"content-length", b"0"))
    return headers


async def send(
    upstream: UpstreamPool,
    pool: Pool,
    method: str,
    target: bytes,
    headers_for: HeadersFor,
    body: bytes | None,
    *,
    retry_after: int,
    holds: float = 0.0,
) -> Reply:
    """Send the request to an origin of ``pool`` and return its reply with the body not yet read.

    ``upstream`` holds the connections of that upstream; ``target`` is the path and query;
    ``headers_for`` builds the headers for an origin's netloc (its ``Host``). An origin that
    cannot be connected to is marked down and the request goes to another healthy one,
    whatever its method, since nothing was sent. A failure after the request went out is
    retried elsewhere for safe methods only. Each failure is named for what it was: no free
    connection within the pool timeout is 503 ``upstream_busy`` with ``Retry-After``; with no
    origin left, 503 when every origin of a balanced pool is down, else 502 (unreachable) or
    504 (too slow); a request the HTTP client refuses to write is 400.
    """
    tried: list[str] = []
    failure = ""
    raw_method = method.encode("ascii")
    while len(tried) < MAX_ATTEMPTS and (member := pool.choose(exclude=tried)) is not None:
        if tried:
            pool.count_retry(failure)
        tried.append(member.url)
        origin = upstream.origins[member.url]
        headers = framed(headers_for(origin.netloc), method, body)
        try:
            return await upstream.request(origin, raw_method, target, headers, body, holds=holds)
        except PoolExhausted:
            logger.warning(
                "upstream %s: no free connection within %g s", pool.name, upstream.limits.pool_timeout
            )
            raise ServiceUnavailable(
                f"the gateway has no free connection to the {pool.name} service; try again shortly",
                code="upstream_busy",
                headers={"Retry-After": str(max(1, math.ceil(upstream.limits.pool_timeout)))},
            ) from None
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
            # The connection never opened, so not a byte of the request reached the origin; the body
            # is buffered, so the same request can go to the next one.
            if pool.mark_down(member.url, "connect", f"connection failed: {type(exc).__name__}"):
                logger.warning("upstream %s %s marked down: %s", pool.name, member.url, type(exc).__name__)
            failure = "connect"
        except httpcore.TimeoutException as exc:
            # Not retried: a slow origin is not a dead one, and a second try doubles both the wait
            # and the load on a service that is already struggling.
            logger.warning("upstream %s timed out: %s", pool.name, type(exc).__name__)
            raise GatewayTimeout(f"the {pool.name} service did not answer in time") from None
        except httpcore.LocalProtocolError as exc:
            # Raised before a byte reaches the upstream, over something the client sent; the message
            # may quote a header value (a token, say), so only the type is logged.
            logger.warning("request for %s could not be written: %s", pool.name, type(exc).__name__)
            raise BadRequest("the request cannot be forwarded as sent") from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            # The request may have been read and acted on before the connection broke (the origin
            # died mid-request, or closed a pooled connection as it was reused). Only a safe method
            # can be sent again without risking doing a login, a mint or an order twice.
            logger.warning("upstream %s failed: %s", pool.name, type(exc).__name__)
            if not may_retry_after_send(method):
                raise BadGateway(f"the {pool.name} service is unreachable") from None
            failure = "after_send"
    if pool.balanced and not pool.available:
        raise ServiceUnavailable(
            f"no {pool.name} service instance is available", headers={"Retry-After": str(retry_after)}
        )
    raise BadGateway(f"the {pool.name} service is unreachable")


async def exchange(
    receive: Receive,
    upstream: UpstreamPool,
    pool: Pool,
    method: str,
    target: bytes,
    headers_for: HeadersFor,
    body: bytes | None,
    *,
    retry_after: int,
    response_headers: Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]],
    buffer_bytes: int,
    send_timeout: float,
    holds: float = 0.0,
) -> Response:
    """:func:`send` then :func:`respond`, abandoned upstream as soon as the client disconnects.

    A client that hangs up while the upstream works gets its upstream request cancelled and
    the connection closed (the upstream sees the disconnect too), rather than the gateway
    waiting on for an answer nobody will read.
    """
    try:
        async with DisconnectWatch(receive):
            reply = await send(
                upstream, pool, method, target, headers_for, body, retry_after=retry_after, holds=holds
            )
            return await respond(
                reply, response_headers(reply.headers), buffer_bytes=buffer_bytes, send_timeout=send_timeout
            )
    except ClientGone:
        upstream.abandoned += 1
        logger.info("client disconnected while waiting for %s; upstream request cancelled", pool.name)
        # Nobody reads it; the status is for the access log (nginx's "client closed request").
        return Response(status_code=499)
