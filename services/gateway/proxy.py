"""Upstream I/O: the pooled client, the buffered request body, the balanced send, the streamed response."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.gateway.balancer import Pool, may_retry_after_send
from services.gateway.settings import GatewaySettings
from shared import BadGateway, BadRequest, GatewayTimeout, RequestTimeout, ServiceUnavailable

logger = logging.getLogger(__name__)

# Below uvicorn's 5 s keep-alive, so the pool drops an idle connection before the upstream does.
KEEPALIVE_EXPIRY_SECONDS = 4.0


def open_client(settings: GatewaySettings) -> httpx.AsyncClient:
    """The one pooled client for every upstream; close it with ``aclose`` (or ``async with``)."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(
            settings.upstream_timeout,
            connect=min(settings.upstream_connect_timeout, settings.upstream_timeout),
        ),
        limits=httpx.Limits(
            max_connections=settings.upstream_max_connections,
            max_keepalive_connections=settings.upstream_max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
        ),
        follow_redirects=False,
        # A gateway must not route through whatever HTTP(S)_PROXY its environment happens to set.
        trust_env=False,
        # The client is shared by every user: a jar would replay one user's cookies for the next.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
    # httpx adds Accept, Accept-Encoding, Connection and User-Agent to each request; a proxy sends
    # only what the client sent (an invented Accept-Encoding makes upstreams compress for it).
    client.headers.clear()
    return client


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


class UpstreamResponse(StreamingResponse):
    """Streams an upstream response to the client and always releases its connection.

    The release is in ``finally`` rather than a background task because Starlette skips
    background tasks when streaming fails part way, which would leak a pooled connection.
    """

    def __init__(self, upstream: httpx.Response, headers: list[tuple[bytes, bytes]]):
        super().__init__(upstream.aiter_raw(), status_code=upstream.status_code)
        # Raw pairs, not a mapping, so that every Set-Cookie survives.
        self.raw_headers = headers
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._upstream.aclose()


# Up to this size a response is read whole and sent in one piece (nginx's proxy_buffering): the
# upstream connection goes back to the pool at once, and the client gets a plain response
# instead of a streamed one, which in Starlette costs a task group per request. Larger ones,
# and ones of unknown length, stream.
BUFFERED_RESPONSE_MAX_BYTES = 64 * 1024


def declared_length(upstream: httpx.Response) -> int | None:
    """The upstream's Content-Length when it is one plain number, else None."""
    value = upstream.headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None


async def respond(
    upstream_name: str, upstream: httpx.Response, headers: list[tuple[bytes, bytes]]
) -> Response:
    """The client's response: small bodies read whole (raw, still encoded), others streamed."""
    length = declared_length(upstream)
    if length is None or length > BUFFERED_RESPONSE_MAX_BYTES:
        return UpstreamResponse(upstream, headers)
    try:
        body = b"".join([chunk async for chunk in upstream.aiter_raw()])
    except httpx.TimeoutException as exc:
        logger.warning("upstream %s timed out in its body: %s", upstream_name, type(exc).__name__)
        raise GatewayTimeout(f"the {upstream_name} service did not answer in time") from None
    except httpx.HTTPError as exc:
        logger.warning("upstream %s failed in its body: %s", upstream_name, type(exc).__name__)
        raise BadGateway(f"the {upstream_name} service sent a broken response") from None
    finally:
        await upstream.aclose()
    response = Response(body, status_code=upstream.status_code)
    # Raw pairs, as the upstream sent them (Content-Length included), so every Set-Cookie survives.
    response.raw_headers = headers
    return response


HeadersFor = Callable[[bytes], list[tuple[bytes, bytes]]]

# A first try and one retry: enough to step over one dead origin, never a retry storm.
MAX_ATTEMPTS = 2


async def send(
    client: httpx.AsyncClient,
    pool: Pool,
    method: str,
    target: bytes,
    headers_for: HeadersFor,
    body: bytes | None,
    *,
    retry_after: int,
) -> httpx.Response:
    """Send the request to an origin of ``pool`` and return its response with the body not yet read.

    ``target`` is the path and query; ``headers_for`` builds the headers for an origin's netloc
    (its ``Host``). An origin that cannot be connected to is marked down and the request goes
    to another healthy one, whatever its method, since nothing was sent. A failure after the
    request went out is retried elsewhere for safe methods only. With no origin left: 503 when
    every origin of a balanced pool is down, else 502 (unreachable) or 504 (too slow); a request
    the HTTP client refuses to write is 400.
    """
    tried: list[str] = []
    failure = ""
    while len(tried) < MAX_ATTEMPTS and (member := pool.choose(exclude=tried)) is not None:
        if tried:
            pool.count_retry(failure)
        tried.append(member.url)
        url = httpx.URL(member.url).copy_with(raw_path=target)
        request = client.build_request(method, url, headers=headers_for(url.netloc), content=body)
        try:
            return await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # The connection never opened, so not a byte of the request reached the origin; the body
            # is buffered, so the same request can go to the next one.
            if pool.mark_down(member.url, "connect", f"connection failed: {type(exc).__name__}"):
                logger.warning("upstream %s %s marked down: %s", pool.name, member.url, type(exc).__name__)
            failure = "connect"
        except httpx.TimeoutException as exc:
            # Not retried: a slow origin is not a dead one, and a second try doubles both the wait
            # and the load on a service that is already struggling.
            logger.warning("upstream %s timed out: %s", pool.name, type(exc).__name__)
            raise GatewayTimeout(f"the {pool.name} service did not answer in time") from None
        except httpx.LocalProtocolError as exc:
            # Raised before a byte reaches the upstream, over something the client sent; the message
            # may quote a header value (a token, say), so only the type is logged.
            logger.warning("request for %s could not be written: %s", pool.name, type(exc).__name__)
            raise BadRequest("the request cannot be forwarded as sent") from None
        except httpx.RequestError as exc:
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
