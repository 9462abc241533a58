"""A real issuer stand-in for revocation tests: the JWKS and a signed, long-polled revocation feed.

It serves what auth serves at ``/.well-known/jwks.json`` and ``/.well-known/revocations.json``
(ETag, 304, ``Prefer: wait=N``), from state the test changes between requests, and counts every
request by path, so a test can prove that a verifier never followed a redirect. Runs in uvicorn
on a free loopback port (see :class:`tests.support.servers.ServerThread`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.claims import ISSUER, claims
from tests.support.servers import ServerThread

FEED_PATH = "/.well-known/revocations.json"
JWKS_PATH = "/.well-known/jwks.json"
MEDIA_TYPE = "application/revocations+jwt"
TTL = 300
LEEWAY = 30

#: Replaces the feed endpoint's answer for a test: gets the request, returns the response.
Override = Callable[[Request], Response]


@functools.cache
def issuer_key(kid: str) -> RSAKey:
    """The stand-in issuer's RSA key named ``kid``, made once per run: 2048-bit generation costs
    about 0.1 s of a core, and no test changes a key. A test that needs a different key under a
    kid already taken (an impostor) generates its own."""
    return RSAKey.generate_key(2048, parameters={"kid": kid})


@pytest.fixture(scope="session")
def key() -> RSAKey:
    """The issuer's key ``key-1``, which :func:`feed_server` publishes; a module may define its own."""
    return issuer_key("key-1")


@pytest.fixture(scope="session")
def second_key() -> RSAKey:
    """Another key of the issuer, ``key-2``, for tests that publish or revoke a second one."""
    return issuer_key("key-2")


def mint(key: RSAKey, *, age: int = 10, **changes: Any) -> str:
    """A token as auth mints it, issued ``age`` seconds ago."""
    iat = int(time.time()) - age
    body = claims(iat=iat, nbf=iat, exp=iat + 300, **changes)
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "at+jwt"}, body, key, algorithms=["RS256"])


async def eventually(probe: Callable[[], object], *, within: float = 5.0, what: str) -> None:
    """Wait, without blocking the event loop, until ``probe()`` is truthy."""
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {within} s")
        await asyncio.sleep(0.01)


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
        #: Set as the server stops: a held long-poll answers at once instead of holding the stop.
        self.closing = False
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

    def next_payload(self, **changes: Any) -> dict[str, Any]:
        """The next feed as this issuer would sign it (no entries), with ``changes``: for a test
        that signs and :meth:`publish` es a feed itself."""
        return {
            "iss": self.issuer,
            "iat": int(time.time()),
            "epoch": self.epoch,
            "version": self.version + 1,
            "entries": [],
            **changes,
        }

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
            while asked == self.etag and time.monotonic() < deadline and not self.closing:  # noqa: ASYNC110
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
        try:
            yield server, thread.url
        finally:
            # uvicorn would wait up to its graceful timeout (2 s) for a verifier's held long-poll.
            server.closing = True
