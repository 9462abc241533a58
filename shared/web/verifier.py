"""Verify bearer access tokens with the issuer's public keys alone."""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry
from starlette.requests import Request

from shared.core.errors import InvalidToken, ServiceUnavailable, Unauthorized
from shared.core.settings import SettingsError, env_float, env_int, env_list, env_str
from shared.core.tokens import (
    ALGORITHM,
    AccessClaims,
    CompactToken,
    TokenPolicy,
    check_claims,
    parse_token,
    read_claims,
)
from shared.web.jwks import JWKSCache, JWKSConfig
from shared.web.verified_cache import VerifiedTokens

# The allowlist lives in joserfc's registry too, so nothing but RS256 can ever verify here.
_RS256 = JWSRegistry(algorithms=[ALGORITHM]).get_alg(ALGORITHM)


class TokenVerifier:
    """Checks a compact JWS against :class:`TokenPolicy` and the keys in a :class:`JWKSCache`.

    Raises :class:`InvalidToken` (401) for any bad token and :class:`ServiceUnavailable` (503)
    when no keys can be had, so an outage is never reported as the caller's fault.
    """

    def __init__(
        self,
        policy: TokenPolicy,
        keys: JWKSCache,
        *,
        clock: Callable[[], float] = time.time,
        verified: VerifiedTokens | None = None,
    ):
        self.policy = policy
        self._keys = keys
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
        remembered = self._verified.get(token, now, self._keys.keys())
        if remembered is not None:
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
        if not _signature_matches(parsed, key):
            raise InvalidToken("signature")
        claims = check_claims(read_claims(parsed), self.policy, now)
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


def _signature_matches(token: CompactToken, key: RSAKey) -> bool:
    # parse_token has already decoded every part once; jwt.decode would decode them all again
    # (a quarter of a cold verification), so joserfc's RS256 is given the bytes it signs.
    try:
        _RS256.check_key(key)
        return _RS256.verify(token.signing_input, token.signature, key)
    except (JoseError, ValueError):
        return False


def bearer_token(request: Request) -> str:
    """The token from exactly one ``Authorization: Bearer <token>`` header."""
    values = request.headers.getlist("authorization")
    if not values:
        raise Unauthorized("an access token is required", headers={"WWW-Authenticate": "Bearer"})
    scheme, _, token = values[0].partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
        raise InvalidToken("authorization_header")
    return token.strip()


@dataclass(frozen=True)
class VerifierSettings:
    """How a resource service finds and trusts the issuer's keys."""

    issuer: str
    jwks: JWKSConfig
    leeway: int
    verified_cache_size: int = 10_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> VerifierSettings:
        """Read the settings; ``JWKS_URL`` may list several copies of the JWKS, separated by commas."""
        jwks_urls = env_list(environ, "JWKS_URL", ("http://127.0.0.1:8001/.well-known/jwks.json",))
        for url in jwks_urls:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise SettingsError(f"JWKS_URL must list http(s) URLs, got {url!r}")
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
        )


@asynccontextmanager
async def open_verifier(settings: VerifierSettings, audience: str) -> AsyncIterator[TokenVerifier]:
    """A verifier for ``audience`` whose key cache is loading; closed on exit."""
    # trust_env=False: whoever set HTTP(S)_PROXY would otherwise choose the keys we trust.
    async with httpx.AsyncClient(
        timeout=settings.jwks.timeout, follow_redirects=False, trust_env=False
    ) as client:
        cache = JWKSCache(settings.jwks, client)
        await cache.start()
        try:
            yield TokenVerifier(
                TokenPolicy(settings.issuer, audience, leeway=settings.leeway),
                cache,
                verified=VerifiedTokens(settings.verified_cache_size),
            )
        finally:
            await cache.aclose()
