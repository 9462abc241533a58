"""Verify bearer access tokens with the issuer's public keys alone."""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Callable, Container, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.requests import Request

from shared.core.errors import InvalidToken, ServiceUnavailable, Unauthorized
from shared.core.settings import SettingsError, env_bool, env_float, env_int, env_list, env_str
from shared.core.tokens import (
    AccessClaims,
    TokenPolicy,
    check_claims,
    parse_token,
    read_claims,
)
from shared.web.jwks import JWKSCache, JWKSConfig, signature_matches
from shared.web.revocations import MAX_WAIT_SECONDS, RevocationCache, RevocationConfig
from shared.web.verified_cache import VerifiedTokens


class TokenVerifier:
    """Checks a compact JWS against :class:`TokenPolicy` and the keys in a :class:`JWKSCache`.

    Raises :class:`InvalidToken` (401) for any bad token and :class:`ServiceUnavailable` (503)
    when no keys can be had, so an outage is never reported as the caller's fault. With a
    :class:`RevocationCache`, a token a live revocation covers is refused with reason ``revoked``,
    also when it was verified before the revocation arrived, and a stale feed under the
    fail-closed policy answers 503 for every token.
    """

    def __init__(
        self,
        policy: TokenPolicy,
        keys: JWKSCache,
        *,
        clock: Callable[[], float] = time.time,
        verified: VerifiedTokens | None = None,
        revocations: RevocationCache | None = None,
    ):
        self.policy = policy
        self._keys = keys
        self._revocations = revocations
        self._clock = clock
        self._verified = verified if verified is not None else VerifiedTokens()
        self.cache_hits = 0
        self.verified_count = 0
        self.unavailable_count = 0
        self.rejected: collections.Counter[str] = collections.Counter()

    @property
    def keys(self) -> JWKSCache:
        """The key cache, for metrics."""
        return self._keys

    @property
    def revocations(self) -> RevocationCache | None:
        """The revocation feed cache, for readiness and metrics; None when the verifier has none."""
        return self._revocations

    @property
    def ready(self) -> bool:
        """True while usable keys are cached."""
        return self._keys.ready

    def status(self) -> dict[str, Any]:
        """Readiness detail: the key cache's state and the verdicts so far, never key material."""
        return {
            **self._keys.status(),
            "verified": self.verified_count,
            "rejected": dict(sorted(self.rejected.items())),
            "unavailable": self.unavailable_count,
        }

    async def verify(self, token: str) -> AccessClaims:
        """The verified claims of ``token``."""
        try:
            claims = await self._verify(token)
        except InvalidToken as exc:
            self.rejected[exc.reason] += 1
            raise
        except ServiceUnavailable:
            self.unavailable_count += 1
            raise
        self.verified_count += 1
        return claims

    async def _verify(self, token: str) -> AccessClaims:
        now = self._clock()
        revocations = self._revocations
        published: Container[str] = self._keys.keys()
        if revocations is not None:
            if revocations.refuses_all:
                raise ServiceUnavailable("the revocation feed is stale")
            if revocations.revoked_kids:
                # A remembered token signed by a revoked key misses, and the full path below refuses it.
                published = _Unrevoked(published, revocations.revoked_kids)
        remembered = self._verified.get(token, now, published)
        if remembered is not None:
            # Checked on every hit rather than purged when a feed arrives: two dict lookups cost
            # less than walking the memory, and no hit can slip in between feed and purge.
            if revocations is not None and revocations.covers(remembered):
                raise InvalidToken("revoked")
            self.cache_hits += 1
            return remembered
        # A token that is not even a well-formed JWS is its holder's fault, keys or not.
        parsed = parse_token(token, self.policy)
        kid = parsed.kid
        if not self._keys.ready:
            # Without keys a well-formed token cannot be judged, so it is not blamed on its
            # holder: 503, never 401, until keys can be had (one rate-limited attempt here).
            await self._keys.refetch()
            if not self._keys.ready:
                raise ServiceUnavailable("signing keys are unavailable")
        key = await self._keys.key_for(kid)
        if key is None:
            if not self._keys.ready:
                raise ServiceUnavailable("signing keys are unavailable")
            raise InvalidToken("unknown_kid")
        if not signature_matches(parsed, key):
            raise InvalidToken("signature")
        claims = check_claims(read_claims(parsed), self.policy, now)
        if revocations is not None and (kid in revocations.revoked_kids or revocations.covers(claims)):
            raise InvalidToken("revoked")
        # Good until the second check_claims would call it expired.
        self._verified.put(token, kid, claims, expires_at=claims.exp + self.policy.leeway)
        return claims

    async def verify_request(self, request: Request) -> AccessClaims:
        """The claims of the request's ``Authorization: Bearer`` token."""
        try:
            token = bearer_token(request)
        except InvalidToken as exc:
            self.rejected[exc.reason] += 1
            raise
        except Unauthorized:
            self.rejected["missing"] += 1
            raise
        return await self.verify(token)


class _Unrevoked:
    """The published kids minus the revoked ones, as the verified-token memory asks about them."""

    __slots__ = ("_published", "_revoked")

    def __init__(self, published: Container[str], revoked: Container[str]):
        self._published = published
        self._revoked = revoked

    def __contains__(self, kid: object) -> bool:
        return kid in self._published and kid not in self._revoked


def bearer_token(request: Request) -> str:
    """The token from exactly one ``Authorization: Bearer <token>`` header."""
    values = request.headers.getlist("authorization")
    if not values:
        raise Unauthorized("an access token is required", headers={"WWW-Authenticate": "Bearer"})
    scheme, _, token = values[0].partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
        raise InvalidToken("authorization_header")
    return token.strip()


def _http_urls(name: str, urls: tuple[str, ...]) -> tuple[str, ...]:
    for url in urls:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise SettingsError(f"{name} must list http(s) URLs, got {url!r}")
    return urls


def beside(url: str, name: str) -> str:
    """``url`` with its last path segment replaced by ``name``: the feed sits beside the JWKS."""
    parts = urlsplit(url)
    path = parts.path.rpartition("/")[0] + "/" + name
    return parts._replace(path=path, query="", fragment="").geturl()


@dataclass(frozen=True)
class VerifierSettings:
    """How a resource service finds and trusts the issuer's keys and learns of revocations."""

    issuer: str
    jwks: JWKSConfig
    leeway: int
    verified_cache_size: int = 10_000
    #: None only for verifiers built in code without a feed; :meth:`from_env` always sets one.
    revocations: RevocationConfig | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> VerifierSettings:
        """Read the settings; ``JWKS_URL`` and ``REVOCATIONS_URL`` may list several copies, comma-separated.

        ``REVOCATIONS_URL`` defaults to ``revocations.json`` beside each ``JWKS_URL``.
        """
        jwks_urls = _http_urls(
            "JWKS_URL", env_list(environ, "JWKS_URL", ("http://127.0.0.1:8001/.well-known/jwks.json",))
        )
        feed_urls = _http_urls(
            "REVOCATIONS_URL",
            env_list(environ, "REVOCATIONS_URL", tuple(beside(url, "revocations.json") for url in jwks_urls)),
        )
        max_stale = env_float(environ, "REVOCATIONS_MAX_STALE_SECONDS", 60.0, minimum=1.0)
        wait = env_int(environ, "REVOCATIONS_WAIT_SECONDS", 20, maximum=MAX_WAIT_SECONDS)
        timeout = env_float(environ, "REVOCATIONS_TIMEOUT_SECONDS", 3.0, minimum=0.1)
        if wait + timeout >= max_stale:
            # A long-poll that is held for its whole wait must not make a healthy feed look stale.
            raise SettingsError(
                "REVOCATIONS_MAX_STALE_SECONDS must be more than REVOCATIONS_WAIT_SECONDS + "
                f"REVOCATIONS_TIMEOUT_SECONDS, got {max_stale:g} <= {wait} + {timeout:g}"
            )
        return cls(
            issuer=env_str(environ, "TOKEN_ISSUER", "http://localhost:8000"),
            jwks=JWKSConfig(
                url=jwks_urls[0],
                fallback_urls=jwks_urls[1:],
                refresh_interval=env_float(environ, "JWKS_REFRESH_SECONDS", 300.0, minimum=1.0),
                refetch_cooldown=env_float(environ, "JWKS_REFETCH_COOLDOWN_SECONDS", 30.0),
                max_stale=env_float(environ, "JWKS_MAX_STALE_SECONDS", 3600.0, minimum=1.0),
                timeout=env_float(environ, "JWKS_TIMEOUT_SECONDS", 3.0, minimum=0.1),
            ),
            leeway=env_int(environ, "TOKEN_LEEWAY_SECONDS", 10, maximum=30),
            verified_cache_size=env_int(
                environ, "VERIFIED_TOKEN_CACHE_SIZE", 10_000, minimum=0, maximum=1_000_000
            ),
            revocations=RevocationConfig(
                url=feed_urls[0],
                fallback_urls=feed_urls[1:],
                wait=wait,
                poll_interval=env_float(environ, "REVOCATIONS_POLL_SECONDS", 1.0, minimum=0.1),
                timeout=timeout,
                max_bytes=env_int(environ, "REVOCATIONS_MAX_BYTES", 16 * 1024 * 1024, minimum=1024),
                max_stale=max_stale,
                fail_closed=env_bool(environ, "REVOCATIONS_FAIL_CLOSED", True),
            ),
        )


@asynccontextmanager
async def open_verifier(settings: VerifierSettings, audience: str) -> AsyncIterator[TokenVerifier]:
    """A verifier for ``audience`` whose key cache and revocation feed are loading; closed on exit."""
    # trust_env=False: whoever set HTTP(S)_PROXY would otherwise choose the keys we trust.
    async with httpx.AsyncClient(
        timeout=settings.jwks.timeout, follow_redirects=False, trust_env=False
    ) as client:
        cache = JWKSCache(settings.jwks, client)
        await cache.start()
        revocations = None
        if settings.revocations is not None:
            revocations = RevocationCache(settings.revocations, settings.issuer, cache, client)
            await revocations.start()
        try:
            yield TokenVerifier(
                TokenPolicy(settings.issuer, audience, leeway=settings.leeway),
                cache,
                verified=VerifiedTokens(settings.verified_cache_size),
                revocations=revocations,
            )
        finally:
            if revocations is not None:
                await revocations.aclose()
            await cache.aclose()
