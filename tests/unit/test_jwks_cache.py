"""Attacks on the JWKS cache: refetch limits, shared fetches, failure modes, staleness and key parsing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, RSAKey
from joserfc.util import int_to_base64

from shared.web.jwks import JWKSCache, JWKSConfig, JWKSFetchError, parse_jwks

JWKS_URL = "http://127.0.0.1:8001/.well-known/jwks.json"
ELSEWHERE_URL = "http://127.0.0.1:8001/elsewhere/jwks.json"
COOLDOWN = 30.0
MAX_STALE = 600.0
# The schedule is pushed out of the way so the fake clock alone decides; tests that want it opt in.
CONFIG = JWKSConfig(
    url=JWKS_URL,
    refresh_interval=3600.0,
    refetch_cooldown=COOLDOWN,
    max_stale=MAX_STALE,
    # Long enough that a stalled machine does not fail a good fetch (0.2 s once did); the tests of
    # slow answers make them slower than this, or pass their own.
    timeout=1.0,
    max_bytes=16 * 1024,
    retry_interval=3600.0,
)


@pytest.fixture(scope="module")
def key_1() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "key-1"})


@pytest.fixture(scope="module")
def key_2() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "key-2"})


def public_jwk(key: RSAKey) -> dict[str, Any]:
    return {**key.as_dict(private=False), "alg": "RS256", "use": "sig"}


def modulus(key: RSAKey | None) -> str:
    assert key is not None
    return str(key.as_dict(private=False)["n"])


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class JWKSServer:
    """Serves the JWKS through MockTransport, counts requests by path, and fails on demand.

    Every failure mode would hand out the current keys if the cache were lax about it.
    """

    def __init__(self, *keys: RSAKey):
        self.keys = list(keys)
        self.failure: str | None = None
        self.paths: list[str] = []
        self.gate: asyncio.Event | None = None
        self.cache_control = "public, max-age=300"

    @property
    def jwks_requests(self) -> int:
        return self.paths.count(httpx.URL(JWKS_URL).path)

    def body(self) -> bytes:
        return json.dumps({"keys": [public_jwk(key) for key in self.keys]}).encode()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        # Give concurrent callers a real window in which the fetch is under way.
        for _ in range(5):
            await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        if str(request.url) == ELSEWHERE_URL:
            return httpx.Response(200, content=self.body())
        return await self._respond(request)

    async def _respond(self, request: httpx.Request) -> httpx.Response:
        body = self.body()
        match self.failure:
            case None:
                headers = {"Content-Type": "application/json", "Cache-Control": self.cache_control}
                return httpx.Response(200, content=body, headers=headers)
            case "connect":
                raise httpx.ConnectError("connection refused", request=request)
            case "http-500":
                return httpx.Response(500, content=body)
            case "http-404":
                return httpx.Response(404, content=body)
            case "garbage":
                return httpx.Response(200, content=b"<html>maintenance</html>")
            case "no-keys":
                return httpx.Response(200, json={"issuer": "http://localhost:8000"})
            case "keys-not-a-list":
                return httpx.Response(200, json={"keys": public_jwk(self.keys[-1])})
            case "empty-keys":
                return httpx.Response(200, json={"keys": []})
            case "duplicate-keys-member":
                return httpx.Response(200, content=b'{"keys": [], ' + body[1:])
            case "redirect":
                return httpx.Response(302, headers={"Location": ELSEWHERE_URL})
            case "oversized":
                padded = {"keys": [public_jwk(key) for key in self.keys], "pad": "x" * CONFIG.max_bytes}
                return httpx.Response(200, json=padded)
            case "oversized-stream":
                return httpx.Response(200, content=self._endless(body))
            case "slow":
                await asyncio.sleep(3)
                return httpx.Response(200, content=body)
            case "slow-body":
                return httpx.Response(200, content=self._dribble(body))
        raise AssertionError(f"unknown failure {self.failure}")

    @staticmethod
    async def _endless(body: bytes) -> AsyncIterator[bytes]:
        # No Content-Length: only counting the bytes as they arrive can stop this.
        yield body[:-1]
        while True:
            yield b" " * 1024

    @staticmethod
    async def _dribble(body: bytes) -> AsyncIterator[bytes]:
        yield body[:10]
        await asyncio.sleep(3)
        yield body[10:]


OpenCache = Callable[..., Awaitable[JWKSCache]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def open_cache(clock: FakeClock) -> AsyncIterator[OpenCache]:
    opened: list[tuple[JWKSCache, httpx.AsyncClient]] = []

    async def open_(
        server: JWKSServer, *, start: bool = True, follow_redirects: bool = False, **config: Any
    ) -> JWKSCache:
        transport = httpx.MockTransport(server.handle)
        client = httpx.AsyncClient(transport=transport, follow_redirects=follow_redirects)
        cache = JWKSCache(replace(CONFIG, **config), client, clock=clock)
        opened.append((cache, client))
        if start:
            await cache.start()
        return cache

    yield open_
    for cache, client in opened:
        await cache.aclose()
        await client.aclose()


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.005)


async def test_start_loads_the_keys(open_cache: OpenCache, key_1: RSAKey) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    assert cache.ready
    assert list(cache.keys()) == ["key-1"]
    assert modulus(await cache.key_for("key-1")) == modulus(key_1)
    assert server.jwks_requests == 1
    status = cache.status()
    assert status["ready"] is True
    assert status["keys"] == 1
    assert modulus(key_1) not in json.dumps(status)


async def test_never_loaded_cache_is_not_ready(open_cache: OpenCache, key_1: RSAKey) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server, start=False)
    assert not cache.ready
    assert cache.keys() == {}
    assert cache.age is None
    assert cache.status()["ready"] is False
    assert server.jwks_requests == 0


async def test_failed_first_load_leaves_the_cache_not_ready(open_cache: OpenCache, key_1: RSAKey) -> None:
    server = JWKSServer(key_1)
    server.failure = "connect"
    cache = await open_cache(server)
    assert not cache.ready
    assert cache.keys() == {}
    assert cache.status()["last_error"]
    assert await cache.key_for("key-1") is None


async def test_a_new_kid_right_after_a_load_is_found_by_exactly_one_refetch(
    open_cache: OpenCache, key_1: RSAKey, key_2: RSAKey
) -> None:
    # The start-up (or a scheduled) fetch does not count against the unknown-kid cooldown:
    # a key published a moment after it must not wait out the cooldown.
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    server.keys.append(key_2)
    assert modulus(await cache.key_for("key-2")) == modulus(key_2)
    assert server.jwks_requests == 2
    assert cache.status()["unknown_kid_refetches"] == 1


async def test_a_flood_of_made_up_kids_costs_one_fetch_per_cooldown(
    open_cache: OpenCache, clock: FakeClock, key_1: RSAKey
) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    for round_ in range(3):
        for i in range(100):
            assert await cache.key_for(f"made-up-{round_}-{i}") is None
            clock.advance(COOLDOWN / 200)
        assert server.jwks_requests == 2 + round_
        clock.advance(COOLDOWN / 2)
    assert cache.status()["unknown_kid_refetches"] == 3


async def test_the_schedule_follows_the_jwks_max_age_when_it_is_shorter(
    open_cache: OpenCache, key_1: RSAKey
) -> None:
    server = JWKSServer(key_1)
    server.cache_control = "public, max-age=7"
    cache = await open_cache(server, refresh_interval=300.0, retry_interval=1.0)
    assert cache.next_refresh_in() == 7
    server.cache_control = "public, max-age=900"
    await cache.refresh()
    assert cache.next_refresh_in() == 300
    server.cache_control = "no-cache"
    await cache.refresh()
    assert cache.next_refresh_in() == 300


async def test_failed_fetches_are_retried_with_a_doubling_delay(open_cache: OpenCache, key_1: RSAKey) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server, refresh_interval=10.0, retry_interval=1.0)
    server.failure = "http-500"
    delays = []
    for _ in range(6):
        await cache.refresh()
        delays.append(cache.next_refresh_in())
    assert delays == [1, 2, 4, 8, 10, 10]
    assert cache.ready
    server.failure = None
    await cache.refresh()
    assert cache.next_refresh_in() == 10


async def test_unknown_kid_refetches_once_and_again_only_after_the_cooldown(
    open_cache: OpenCache, clock: FakeClock, key_1: RSAKey
) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    clock.advance(COOLDOWN)
    assert await cache.key_for("key-9") is None
    assert server.jwks_requests == 2
    for _ in range(20):
        assert await cache.key_for("key-9") is None
    assert server.jwks_requests == 2
    clock.advance(COOLDOWN - 0.5)
    assert await cache.key_for("key-10") is None
    assert server.jwks_requests == 2
    clock.advance(0.5)
    assert await cache.key_for("key-10") is None
    assert server.jwks_requests == 3


async def test_known_kid_never_fetches(open_cache: OpenCache, clock: FakeClock, key_1: RSAKey) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    for _ in range(10):
        clock.advance(COOLDOWN)
        assert await cache.key_for("key-1") is not None
    assert server.jwks_requests == 1


async def test_a_newly_published_key_is_found_by_the_refetch(
    open_cache: OpenCache, clock: FakeClock, key_1: RSAKey, key_2: RSAKey
) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    server.keys.append(key_2)
    clock.advance(COOLDOWN)
    assert modulus(await cache.key_for("key-2")) == modulus(key_2)
    assert modulus(await cache.key_for("key-1")) == modulus(key_1)
    assert server.jwks_requests == 2


async def test_a_removed_key_is_forgotten_after_a_good_fetch(
    open_cache: OpenCache, clock: FakeClock, key_1: RSAKey, key_2: RSAKey
) -> None:
    server = JWKSServer(key_1, key_2)
    cache = await open_cache(server)
    server.keys = [key_2]
    clock.advance(COOLDOWN)
    await cache.refresh()
    assert await cache.key_for("key-1") is None
    assert list(cache.keys()) == ["key-2"]


@pytest.mark.parametrize("missing_kid", ["key-2", "key-9"], ids=["published", "absent"])
async def test_fifty_concurrent_misses_share_exactly_one_fetch(
    open_cache: OpenCache, clock: FakeClock, key_1: RSAKey, key_2: RSAKey, missing_kid: str
) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    server.keys.append(key_2)
    clock.advance(COOLDOWN)
    results = await asyncio.gather(*(cache.key_for(missing_kid) for _ in range(50)))
    assert server.jwks_requests == 2
    assert cache.fetch_count == 2
    expected = modulus(key_2) if missing_kid == "key-2" else None
    assert [None if key is None else modulus(key) for key in results] == [expected] * 50


async def test_concurrent_misses_on_an_empty_cache_share_one_fetch(
    open_cache: OpenCache, key_1: RSAKey
) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server, start=False)
    results = await asyncio.gather(*(cache.key_for("key-1") for _ in range(50)))
    assert server.jwks_requests == 1
    assert all(modulus(key) == modulus(key_1) for key in results)


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_fetch(
    open_cache: OpenCache, clock: FakeClock, key_1: RSAKey, key_2: RSAKey
) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    server.keys.append(key_2)
    server.gate = asyncio.Event()
    clock.advance(COOLDOWN)
    impatient = asyncio.create_task(cache.key_for("key-2"))
    patient = asyncio.create_task(cache.key_for("key-2"))
    await until(lambda: server.jwks_requests == 2)
    impatient.cancel()
    await asyncio.sleep(0)
    server.gate.set()
    assert modulus(await patient) == modulus(key_2)
    assert impatient.cancelled()
    assert server.jwks_requests == 2


FAILURES = [
    "connect",
    "http-500",
    "http-404",
    "garbage",
    "no-keys",
    "keys-not-a-list",
    "empty-keys",
    "duplicate-keys-member",
    "redirect",
    "oversized",
    "oversized-stream",
    "slow",
    "slow-body",
]


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_failed_fetch_keeps_the_last_good_keys(
    open_cache: OpenCache, clock: FakeClock, key_1: RSAKey, key_2: RSAKey, failure: str
) -> None:
    server = JWKSServer(key_1)
    # A client that would follow redirects: the cache itself must refuse to.
    cache = await open_cache(server, follow_redirects=True)
    server.keys.append(key_2)
    server.failure = failure
    clock.advance(COOLDOWN)
    assert await cache.key_for("key-2") is None
    assert server.jwks_requests == 2
    assert modulus(await cache.key_for("key-1")) == modulus(key_1)
    assert cache.ready
    assert list(cache.keys()) == ["key-1"]
    status = cache.status()
    assert (status["failures"], status["fetches"]) == (1, 2)
    assert status["last_error"]


async def test_a_redirect_is_never_followed(open_cache: OpenCache, key_1: RSAKey) -> None:
    server = JWKSServer(key_1)
    server.failure = "redirect"
    cache = await open_cache(server, follow_redirects=True)
    assert not cache.ready
    assert server.paths == [httpx.URL(JWKS_URL).path]


async def test_a_slow_response_is_cut_off_at_the_timeout(open_cache: OpenCache, key_1: RSAKey) -> None:
    server = JWKSServer(key_1)
    server.failure = "slow-body"
    loop = asyncio.get_running_loop()
    started = loop.time()
    cache = await open_cache(server, timeout=0.1)
    assert loop.time() - started < 5
    assert not cache.ready
    assert cache.status()["last_error"] == "TimeoutError"


async def test_the_byte_cap_applies_to_the_whole_body(open_cache: OpenCache, key_1: RSAKey) -> None:
    server = JWKSServer(key_1)
    exact = len(server.body())
    assert (await open_cache(server, max_bytes=exact)).ready
    assert not (await open_cache(server, max_bytes=exact - 1)).ready


async def test_keys_older_than_max_stale_are_dropped(
    open_cache: OpenCache, clock: FakeClock, key_1: RSAKey
) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    server.failure = "http-500"
    clock.advance(MAX_STALE)
    assert cache.ready
    assert await cache.key_for("key-1") is not None
    clock.advance(1)
    assert not cache.ready
    assert cache.keys() == {}
    assert cache.status()["ready"] is False
    assert await cache.key_for("key-1") is None
    assert server.jwks_requests == 2


async def test_stale_cache_recovers_once_the_issuer_answers_again(
    open_cache: OpenCache, clock: FakeClock, key_1: RSAKey
) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    server.failure = "connect"
    clock.advance(MAX_STALE + 1)
    assert await cache.key_for("key-1") is None
    server.failure = None
    assert await cache.key_for("key-1") is None, "the cooldown still applies"
    clock.advance(COOLDOWN)
    assert modulus(await cache.key_for("key-1")) == modulus(key_1)
    assert cache.ready
    assert cache.status()["last_error"] is None


async def test_keys_are_refreshed_on_the_schedule(
    open_cache: OpenCache, key_1: RSAKey, key_2: RSAKey
) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server, refresh_interval=0.02)
    server.keys = [key_2]
    await until(lambda: set(cache.keys()) == {"key-2"})


async def test_a_failed_start_is_retried_on_the_schedule(open_cache: OpenCache, key_1: RSAKey) -> None:
    server = JWKSServer(key_1)
    server.failure = "connect"
    cache = await open_cache(server, retry_interval=0.02)
    assert not cache.ready
    server.failure = None
    await until(lambda: cache.ready)


def cache_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("jwks-") and not task.done()]


async def test_aclose_leaves_no_task_behind(open_cache: OpenCache, key_1: RSAKey) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server)
    server.gate = asyncio.Event()
    refreshing = asyncio.create_task(cache.refresh())
    await until(lambda: server.jwks_requests == 2)
    assert {task.get_name() for task in cache_tasks()} == {"jwks-refresh", "jwks-fetch"}
    await cache.aclose()
    assert cache_tasks() == []
    with pytest.raises(asyncio.CancelledError):
        await refreshing


def jwks(*entries: Any) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


def small_rsa_jwk(bits: int) -> dict[str, Any]:
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key().public_numbers()
    return {"kty": "RSA", "kid": "small", "n": int_to_base64(numbers.n), "e": int_to_base64(numbers.e)}


def test_parse_jwks_keeps_a_good_key(key_1: RSAKey) -> None:
    keys = parse_jwks(jwks(public_jwk(key_1)))
    assert list(keys) == ["key-1"]
    assert modulus(keys["key-1"]) == modulus(key_1)


def test_parse_jwks_accepts_an_entry_without_use_or_alg(key_1: RSAKey) -> None:
    assert list(parse_jwks(jwks(key_1.as_dict(private=False)))) == ["key-1"]


def _with(key: RSAKey, **changes: Any) -> dict[str, Any]:
    entry = {**public_jwk(key), "kid": "bad", **changes}
    return {name: value for name, value in entry.items() if value is not None}


BAD_ENTRIES: dict[str, Callable[[RSAKey], Any]] = {
    "ec": lambda key: {**ECKey.generate_key("P-256").as_dict(private=False), "kid": "bad"},
    "oct": lambda key: {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "kid": "bad", "alg": "HS256"},
    "kty-lowercase": lambda key: _with(key, kty="rsa"),
    "use-enc": lambda key: _with(key, use="enc"),
    "alg-rs512": lambda key: _with(key, alg="RS512"),
    "alg-ps256": lambda key: _with(key, alg="PS256"),
    "alg-hs256": lambda key: _with(key, alg="HS256"),
    "alg-none": lambda key: _with(key, alg="none"),
    "missing-n": lambda key: {k: v for k, v in _with(key).items() if k != "n"},
    "missing-e": lambda key: {k: v for k, v in _with(key).items() if k != "e"},
    "missing-kid": lambda key: {k: v for k, v in _with(key).items() if k != "kid"},
    "empty-kid": lambda key: _with(key, kid=""),
    "numeric-kid": lambda key: _with(key, kid=7),
    "numeric-n": lambda key: _with(key, n=12345),
    "list-e": lambda key: _with(key, e=["AQAB"]),
    "n-not-base64": lambda key: _with(key, n="!!not base64!!"),
    "string-entry": lambda key: "RSA",
    "null-entry": lambda key: None,
    "list-entry": lambda key: [public_jwk(key)],
    "rsa-1024": lambda key: small_rsa_jwk(1024),
    "rsa-2040": lambda key: small_rsa_jwk(2040),
}


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
@pytest.mark.parametrize("name", sorted(BAD_ENTRIES))
def test_parse_jwks_skips_unusable_entries_and_keeps_the_good_ones(key_1: RSAKey, name: str) -> None:
    bad = BAD_ENTRIES[name](key_1)
    assert list(parse_jwks(jwks(bad, public_jwk(key_1)))) == ["key-1"]
    assert list(parse_jwks(jwks(public_jwk(key_1), bad))) == ["key-1"]
    with pytest.raises(JWKSFetchError, match="no usable"):
        parse_jwks(jwks(bad))


def test_parse_jwks_never_keeps_private_members(key_1: RSAKey) -> None:
    leaked = {**key_1.as_dict(private=True), "alg": "RS256", "use": "sig"}
    assert "d" in leaked
    key = parse_jwks(jwks(leaked))["key-1"]
    assert not key.is_private
    assert key.private_key is None
    assert modulus(key) == modulus(key_1)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"keys"',
        b'{"keys": {}}',
        b'{"keys": "RSA"}',
        b'{"keys": null}',
        b'{"keys": [], "keys": []}',
        b'{"keys": [{"kty": "RSA", "n": NaN}]}',
        b'{"keys": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
    ids=[
        "empty",
        "text",
        "not-utf8",
        "array",
        "string",
        "object",
        "keys-string",
        "null",
        "dup",
        "nan",
        "deep",
    ],
)
def test_parse_jwks_rejects_a_document_that_is_not_a_jwks(body: bytes) -> None:
    with pytest.raises(JWKSFetchError):
        parse_jwks(body)


async def test_a_cache_that_failed_closed_retries_every_retry_interval(
    open_cache: OpenCache, clock: FakeClock, key_1: RSAKey
) -> None:
    server = JWKSServer(key_1)
    cache = await open_cache(server, refresh_interval=300.0, retry_interval=1.0)
    server.failure = "connect"
    for _ in range(8):
        await cache.refresh()
    assert cache.next_refresh_in() == 128
    clock.advance(MAX_STALE + 1)
    assert not cache.ready
    # No backoff once nothing is served: recovery must not wait minutes after auth returns.
    assert cache.next_refresh_in() == 1.0
