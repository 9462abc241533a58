"""A real issuer stand-in for revocation tests: the JWKS and a signed, long-polled revocation feed.

It serves what auth serves at ``/.well-known/jwks.json`` and ``/.well-known/revocations.json``
(ETag, 304, ``Prefer: wait=N``), from state the test changes between requests, and counts every
request by path, so a test can prove that a verifier never followed a redirect. Runs in uvicorn
on a free loopback port (see :class:`tests.support.servers.ServerThread`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from joserfc import jws
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.claims import ISSUER
from tests.support.servers import ServerThread

FEED_PATH = "/.well-known/revocations.json"
JWKS_PATH = "/.well-known/jwks.json"
MEDIA_TYPE = "application/revocations+jwt"
TTL = 300
LEEWAY = 30

#: Replaces the feed endpoint's answer for a test: gets the request, returns the response.
Override = Callable[[Request], Response]


def public_jwk(key: RSAKey) -> dict[str, Any]:
    return {**key.as_dict(private=False), "alg": "RS256", "use": "sig"}


def entry(kind: str, id_: str, before: int, until: int | None = None) -> dict[str, Any]:
    """One feed entry; ``until`` defaults to the contract's ``before + TTL + max leeway``."""
    return {
        "kind": kind,
        "id": id_,
        "before": before,
        "until": before + TTL + LEEWAY if until is None else until,
    }


def sign_feed(key: RSAKey, payload: dict[str, Any], **header: Any) -> str:
    """A compact JWS of ``payload`` with the feed's header; ``header`` changes or adds members."""
    protected = {"alg": "RS256", "kid": key.kid, "typ": "revocations+jwt", **header}
    return jws.serialize_compact(protected, json.dumps(payload).encode(), key)


class FeedServer:
    """The issuer's state: keys, the feed (epoch, version, entries), and how the feed endpoint answers."""

    def __init__(self, key: RSAKey, *, issuer: str = ISSUER):
        self.key = key
        self.issuer = issuer
        self.published_keys = [key]
        self.epoch = uuid.uuid4().hex
        self.version = 1
        self.iat = int(time.time())
        self.entries: list[dict[str, Any]] = []
        self.body = ""
        self.etag = ""
        #: False makes the endpoint ignore ``Prefer: wait`` (an issuer that only answers 304).
        self.long_poll = True
        self.override: Override | None = None
        self._lock = threading.Lock()
        self._hits: Counter[str] = Counter()
        self.prefer_headers: list[str] = []
        self._sign()

    def _sign(self) -> None:
        payload = {
            "iss": self.issuer,
            "iat": self.iat,
            "epoch": self.epoch,
            "version": self.version,
            "entries": self.entries,
        }
        self.body = sign_feed(self.key, payload)
        self.etag = f'"{self.epoch}.{self.version}"'

    def revoke(self, *entries: dict[str, Any]) -> None:
        """Record entries as auth does: version + 1, then the new feed is served (and long-polls wake)."""
        with self._lock:
            self.entries = [*self.entries, *entries]
            self.version += 1
            self.iat = int(time.time())
            self._sign()

    def publish(self, body: str, etag: str) -> None:
        """Serve a feed the test built itself (a replay, a forgery) under ``etag``."""
        with self._lock:
            self.body, self.etag = body, etag

    def hits(self, path: str) -> int:
        with self._lock:
            return self._hits[path]

    def app(self) -> Starlette:
        async def jwks(request: Request) -> Response:
            self._count(request)
            return JSONResponse({"keys": [public_jwk(key) for key in self.published_keys]})

        async def feed(request: Request) -> Response:
            self._count(request)
            if self.override is not None:
                return self.override(request)
            prefer = request.headers.get("prefer", "")
            self.prefer_headers.append(prefer)
            asked = request.headers.get("if-none-match")
            wait = int(prefer.partition("=")[2]) if prefer.startswith("wait=") and self.long_poll else 0
            deadline = time.monotonic() + min(wait, 30)
            asked_held = asked == self.etag
            # Polled, not awaited on an event: the test changes the state from another thread.
            while asked == self.etag and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            # As auth does: the preference is applied only to a request that was held, so a feed
            # already changed when asked comes back at once without Preference-Applied.
            applied = {"Preference-Applied": f"wait={wait}"} if wait and asked_held else {}
            if asked == self.etag:
                return Response(status_code=304, headers={"ETag": self.etag, **applied})
            return Response(
                self.body,
                media_type=MEDIA_TYPE,
                headers={"ETag": self.etag, "Cache-Control": "public, max-age=1", **applied},
            )

        async def elsewhere(request: Request) -> Response:
            self._count(request)
            return Response(self.body, media_type=MEDIA_TYPE)

        return Starlette(
            routes=[Route(JWKS_PATH, jwks), Route(FEED_PATH, feed), Route("/elsewhere", elsewhere)]
        )

    def _count(self, request: Request) -> None:
        with self._lock:
            self._hits[request.url.path] += 1


@contextmanager
def feed_server(key: RSAKey, **options: Any) -> Iterator[tuple[FeedServer, str]]:
    """A running :class:`FeedServer` and its base URL."""
    server = FeedServer(key, **options)
    with ServerThread(server.app()) as thread:
        yield server, thread.url
