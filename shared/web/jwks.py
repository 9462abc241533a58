"""An asynchronous JWKS cache: the only way a verifier learns public keys.

It loads before the service reports ready, refreshes on a schedule (no later than the JWKS
``max-age``, which the issuer's key rotation is timed against), refetches at most once per
cooldown for an unknown ``kid`` (concurrent misses share that one fetch), and keeps the last
good keys for ``max_stale`` seconds when fetching fails, then fails closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

from shared.core.tokens import ALGORITHM, CompactToken, loads_strict
from shared.web.periodic import Periodic, cancel_and_wait

logger = logging.getLogger(__name__)

MIN_RSA_BITS = 2048
# The allowlist lives in joserfc's registry too, so nothing but RS256 can ever verify here.
_RS256 = JWSRegistry(algorithms=[ALGORITHM]).get_alg(ALGORITHM)


class JWKSFetchError(Exception):
    """The JWKS could not be fetched or parsed; the message is safe to log."""


@dataclass(frozen=True)
class JWKSConfig:
    """Where the keys live and how hard to hold on to them.

    ``fallback_urls`` name other copies of the same JWKS (replicas of the issuer): a fetch that
    fails at one URL goes on to the next, each within an equal share of ``timeout``.
    """

    url: str
    fallback_urls: tuple[str, ...] = ()
    refresh_interval: float = 300.0
    refetch_cooldown: float = 30.0
    max_stale: float = 3600.0
    timeout: float = 3.0
    max_bytes: int = 64 * 1024
    retry_interval: float = 1.0

    @property
    def urls(self) -> tuple[str, ...]:
        """Every URL of the JWKS, the primary first."""
        return (self.url, *self.fallback_urls)


def parse_jwks(body: bytes) -> dict[str, RSAKey]:
    """Public RS256 signing keys by ``kid``. Entries of other types or uses are skipped."""
    try:
        document = loads_strict(body)
    except (ValueError, UnicodeDecodeError):
        raise JWKSFetchError("JWKS is not valid JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSFetchError("JWKS has no keys array")
    keys: dict[str, RSAKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        kid, n, e = entry.get("kid"), entry.get("n"), entry.get("e")
        if not (isinstance(kid, str) and kid and isinstance(n, str) and isinstance(e, str)):
            continue
        try:
            # Only the public members: a JWKS that leaks "d" must not turn us into a signer.
            key = RSAKey.import_key({"kty": "RSA", "n": n, "e": e})
        except Exception:  # a malformed entry must not poison the good ones
            logger.warning("skipped an unreadable JWKS entry", extra={"kid": kid[:64]})
            continue
        if key.raw_value.key_size < MIN_RSA_BITS:
            logger.warning("skipped a JWKS key under %d bits", MIN_RSA_BITS, extra={"kid": kid[:64]})
            continue
        keys[kid] = key
    if not keys:
        raise JWKSFetchError("JWKS has no usable RS256 keys")
    return keys


def signature_matches(token: CompactToken, key: RSAKey) -> bool:
    """Whether ``key`` made the RS256 signature of a parsed compact JWS (an access token or a feed)."""
    # The caller has already decoded every part once; jwt.decode would decode them all again
    # (a quarter of a cold verification), so joserfc's RS256 is given the bytes it signs.
    try:
        _RS256.check_key(key)
        return _RS256.verify(token.signing_input, token.signature, key)
    except (JoseError, ValueError):
        return False


class JWKSCache:
    """Holds the issuer's public keys for one process. Open with :meth:`start`, close with :meth:`aclose`.

    The scheduled refresh runs every ``refresh_interval``, or sooner when the JWKS response's
    ``Cache-Control: max-age`` says so: that is the issuer's promise of how long a key set
    stays good, and key rotation is timed against it. After a failed fetch it retries with
    a doubling delay from ``retry_interval`` up to the refresh interval.
    """

    def __init__(
        self, config: JWKSConfig, client: httpx.AsyncClient, *, clock: Callable[[], float] = time.monotonic
    ):
        self.config = config
        self._client = client
        self._clock = clock
        self._keys: dict[str, RSAKey] = {}
        self._fetched_at: float | None = None
        self._last_refetch: float | None = None
        self._last_error: str | None = None
        self._max_age: float | None = None
        self._failures_in_a_row = 0
        self._inflight: asyncio.Task[None] | None = None
        # The URL that answered last is asked first, so a dead replica costs no time once skipped.
        self._preferred = 0
        self._scheduler: Periodic | None = None
        self.fetch_count = 0
        self.success_count = 0
        self.failure_count = 0
        self.refetch_count = 0

    @property
    def ready(self) -> bool:
        """True while the cache holds keys that are not older than ``max_stale``."""
        return bool(self._keys) and self.age is not None and self.age <= self.config.max_stale

    @property
    def age(self) -> float | None:
        """Seconds since the last successful fetch, or None before the first."""
        return None if self._fetched_at is None else self._clock() - self._fetched_at

    @property
    def last_fetch_ok(self) -> bool | None:
        """Whether the last completed fetch succeeded; None before any fetch."""
        if self.fetch_count == 0:
            return None
        return self._failures_in_a_row == 0

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def status(self) -> dict[str, Any]:
        """A summary for readiness probes; holds no key material."""
        return {
            "ready": self.ready,
            "keys": len(self._keys),
            "age_seconds": None if self.age is None else round(self.age, 1),
            "last_fetch_ok": self.last_fetch_ok,
            "fetches": self.fetch_count,
            "failures": self.failure_count,
            "unknown_kid_refetches": self.refetch_count,
            "last_error": self._last_error,
        }

    async def start(self) -> None:
        """Try one load now and keep the schedule running; never raises on fetch failure."""
        await self.refresh()
        self._scheduler = Periodic(self.refresh, self.next_refresh_in, name="jwks-refresh")
        self._scheduler.start()

    async def aclose(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.aclose()
        if self._inflight is not None:
            await cancel_and_wait(self._inflight)

    def keys(self) -> Mapping[str, RSAKey]:
        """The usable keys: empty once they are older than ``max_stale`` (fail closed)."""
        return self._keys if self.ready else {}

    async def key_for(self, kid: str) -> RSAKey | None:
        """The key for ``kid``; an unknown ``kid`` triggers at most one refetch per cooldown.

        The cooldown counts from the last refetch an unknown ``kid`` caused, not from the
        scheduled fetches: a key published just after a scheduled fetch is found by one
        refetch, while a flood of made-up kids still costs one fetch per cooldown.
        """
        key = self.keys().get(kid)
        if key is not None:
            return key
        await self.refetch()
        return self.keys().get(kid)

    async def refetch(self) -> None:
        """Fetch now on behalf of a caller that found no key, unless the cooldown forbids it.

        A fetch already under way is joined instead, whatever the cooldown says.
        """
        if self._inflight is None:
            now = self._clock()
            last = self._last_refetch
            if last is not None and now - last < self.config.refetch_cooldown:
                return
            self._last_refetch = now
            self.refetch_count += 1
        await self.refresh()

    async def refresh(self) -> None:
        """Fetch now, or join the fetch already under way."""
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")
            self._inflight.add_done_callback(self._clear_inflight)
        await asyncio.shield(self._inflight)

    def _clear_inflight(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch(self) -> None:
        self.fetch_count += 1
        try:
            keys, max_age = await self._fetch_any()
        except JWKSFetchError as exc:
            self.failure_count += 1
            self._failures_in_a_row += 1
            self._last_error = str(exc)
            logger.warning(
                "JWKS fetch failed; keeping %d cached keys",
                len(self._keys),
                extra={"error": self._last_error},
            )
            return
        self.success_count += 1
        self._keys = keys
        self._fetched_at = self._clock()
        self._max_age = max_age
        self._failures_in_a_row = 0
        self._last_error = None

    async def _fetch_any(self) -> tuple[dict[str, RSAKey], float | None]:
        """The keys from the first URL that gives usable ones, starting with the last that did."""
        urls = self.config.urls
        share = self.config.timeout / len(urls)
        errors: list[str] = []
        for step in range(len(urls)):
            index = (self._preferred + step) % len(urls)
            try:
                async with asyncio.timeout(share):
                    body, max_age = await self._download(urls[index])
                keys = parse_jwks(body)
            except (JWKSFetchError, httpx.HTTPError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
                errors.append(error if len(urls) == 1 else f"{urls[index]}: {error}")
                continue
            self._preferred = index
            return keys, max_age
        raise JWKSFetchError("; ".join(errors))

    async def _download(self, url: str) -> tuple[bytes, float | None]:
        async with self._client.stream("GET", url, follow_redirects=False) as response:
            if response.status_code != 200:
                raise JWKSFetchError(f"JWKS answered HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.config.max_bytes:
                    raise JWKSFetchError(f"JWKS is larger than {self.config.max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks), cache_max_age(response.headers.get("cache-control", ""))

    def next_refresh_in(self) -> float:
        """Seconds until the schedule fetches again, from the outcome of the last fetch.

        Normally the refresh interval, or the JWKS max-age if shorter. After failures, while
        the cached keys are still usable, a doubling delay capped at that; once no usable keys
        are left, every ``retry_interval``, so a service that failed closed recovers quickly.
        """
        interval = self.config.refresh_interval
        if self._max_age is not None:
            interval = min(interval, max(self._max_age, self.config.retry_interval))
        if not self.ready:
            return self.config.retry_interval
        if self._failures_in_a_row:
            backoff: float = self.config.retry_interval * 2 ** (self._failures_in_a_row - 1)
            return min(backoff, interval)
        return interval


def cache_max_age(cache_control: str) -> float | None:
    """The ``max-age`` of a ``Cache-Control`` value in seconds, or None if absent or unreadable."""
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        if name.strip().lower() == "max-age":
            value = value.strip().strip('"')
            if value.isascii() and value.isdigit():
                return float(value)
            return None
    return None
