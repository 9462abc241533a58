"""The upstreams' own OpenAPI documents, fetched over HTTP and kept for a while, and the public one
the gateway renders from them (:func:`services.gateway.openapi.public_document`).

Asked for on demand (a request for ``/openapi.json``), not on a schedule: nobody waits for a
description the way a request waits for a route. A document is kept for ``max_age`` seconds; an
upstream that cannot be reached is asked again no sooner than ``retry_after`` seconds later, and
meanwhile its last good document is used, or, when there never was one, its operations are left out
and the public document says so. Concurrent requests share one round of fetches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from services.gateway import openapi
from services.gateway.balancer import Pool
from services.gateway.domain import ROUTE_TABLE, Route
from services.gateway.settings import GatewaySettings
from shared.core import BadGateway

logger = logging.getLogger(__name__)

DESCRIPTION_PATH = "/openapi.json"


def open_description_client(*, timeout: float, connect_timeout: float, upstreams: int) -> httpx.AsyncClient:
    """A small client of its own: fetching a description never waits behind traffic for a pooled
    connection, follows no redirect and reads no proxy settings from the environment."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
        limits=httpx.Limits(max_connections=upstreams, max_keepalive_connections=0),
        follow_redirects=False,
        trust_env=False,
    )


class DescriptionUnavailable(Exception):
    """One upstream's description could not be had this time; the message says why."""


@dataclass
class _Entry:
    document: dict[str, Any] | None = None
    fetched_at: float | None = None
    failed_at: float | None = None


class UpstreamDescriptions:
    """Per upstream name, the OpenAPI document its origins serve at ``/openapi.json``."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        pools: Mapping[str, Pool],
        *,
        max_age: float,
        retry_after: float,
        max_bytes: int,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self._pools = dict(pools)
        self._max_age = max_age
        self._retry_after = retry_after
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._clock = clock
        self._entries = {name: _Entry() for name in self._pools}
        self._lock = asyncio.Lock()
        #: Grows whenever a document changes, so a rendering of the same documents can be reused.
        self.version = 0

    def _due(self, entry: _Entry, now: float) -> bool:
        if entry.failed_at is not None and now - entry.failed_at < self._retry_after:
            return False
        return entry.fetched_at is None or now - entry.fetched_at >= self._max_age

    async def current(self) -> dict[str, dict[str, Any] | None]:
        """Every upstream's document, refetching those that are due; None for one never fetched."""
        async with self._lock:
            now = self._clock()
            due = [name for name, entry in self._entries.items() if self._due(entry, now)]
            if due:
                await asyncio.gather(*(self._refresh(name) for name in due))
        return {name: entry.document for name, entry in self._entries.items()}

    async def _refresh(self, name: str) -> None:
        entry = self._entries[name]
        try:
            document = await self.fetch(name)
        except DescriptionUnavailable as exc:
            entry.failed_at = self._clock()
            logger.warning("the description of upstream %s could not be fetched: %s", name, exc)
            return
        entry.failed_at = None
        entry.fetched_at = self._clock()
        if document != entry.document:
            entry.document = document
            self.version += 1

    def _origin(self, name: str) -> str:
        # The first origin the health checks pass, without taking a turn from the balancer's round
        # robin: any replica serves the same description.
        members = self._pools[name].members
        return next((member for member in members if member.healthy), members[0]).url

    async def fetch(self, name: str) -> dict[str, Any]:
        """Upstream ``name``'s document, within the timeout and the byte cap, or
        :class:`DescriptionUnavailable`."""
        url = self._origin(name) + DESCRIPTION_PATH
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._read(url)
        except TimeoutError:
            raise DescriptionUnavailable(f"no answer from {url} within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise DescriptionUnavailable(f"{type(exc).__name__} from {url}") from None
        try:
            return openapi.checked(json.loads(body))
        except ValueError as exc:
            raise DescriptionUnavailable(f"{url} served no usable description: {exc}") from None

    async def _read(self, url: str) -> bytes:
        # Identity only: the cap counts the bytes that will be parsed, and nothing can inflate past it.
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        async with self._client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                raise DescriptionUnavailable(f"{url} answered HTTP {response.status_code}")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise DescriptionUnavailable(f"{url} sent a compressed body it was not asked for")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise DescriptionUnavailable(f"{url} declares {declared} bytes, over {self._max_bytes}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise DescriptionUnavailable(f"{url} sent over {self._max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)


class PublicDescription:
    """The gateway's own ``/openapi.json`` body, rendered again only when an upstream's changed."""

    def __init__(self, upstreams: UpstreamDescriptions, table: Sequence[Route] = ROUTE_TABLE):
        self._upstreams = upstreams
        self._table = table
        self._rendered: tuple[int, bytes, bool] | None = None

    async def render(self) -> tuple[bytes, bool]:
        """The JSON body, and whether every upstream is described in it.

        A conflict between two upstreams' descriptions is a broken deployment, not a passing
        outage: it is logged as an error and answered ``502 description_conflict``.
        """
        documents = await self._upstreams.current()
        version = self._upstreams.version
        if self._rendered is None or self._rendered[0] != version:
            try:
                document = openapi.public_document(documents, self._table)
            except openapi.DescriptionConflict as exc:
                logger.error("the upstream descriptions cannot be merged: %s", exc)
                raise BadGateway(
                    "the upstream descriptions cannot be merged", code="description_conflict"
                ) from None
            complete = openapi.UNAVAILABLE not in document
            self._rendered = (version, json.dumps(document, separators=(",", ":")).encode(), complete)
        return self._rendered[1], self._rendered[2]


@asynccontextmanager
async def open_public_description(
    settings: GatewaySettings, pools: Mapping[str, Pool]
) -> AsyncIterator[PublicDescription]:
    """The public description over a client of its own, closed on exit (the gateway's lifespan)."""
    async with open_description_client(
        timeout=settings.upstream_timeout,
        connect_timeout=settings.upstream_connect_timeout,
        upstreams=len(pools),
    ) as client:
        upstreams = UpstreamDescriptions(
            client,
            pools,
            max_age=settings.openapi_cache_seconds,
            # An upstream that failed is asked again once a health check could have seen it back.
            retry_after=settings.upstream_health_interval,
            max_bytes=settings.openapi_max_bytes,
            timeout=settings.upstream_timeout,
        )
        yield PublicDescription(upstreams, settings.routes)
