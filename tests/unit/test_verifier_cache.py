"""The verifier remembers good tokens: a reused token skips the signature check, and nothing else does."""

from __future__ import annotations

import httpx
import pytest
from joserfc.jwk import RSAKey
from test_verifier import JWKS_URL, POLICY, good_claims, mint

import shared.web.verifier
from shared.core.errors import InvalidToken
from shared.core.tokens import CompactToken
from shared.web.jwks import JWKSCache, JWKSConfig
from shared.web.verified_cache import VerifiedTokens
from shared.web.verifier import TokenVerifier
from tests.support.claims import NOW


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A JWKS endpoint whose published keys the test changes."""

    def __init__(self, *keys: RSAKey):
        self.keys = list(keys)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "keys": [{**key.as_dict(private=False), "alg": "RS256", "use": "sig"} for key in self.keys]
            },
        )


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "key-1"})


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token that reached the RS256 signature check, as the signing input it was checked over."""
    seen: list[str] = []
    real_check = shared.web.verifier.signature_matches

    def counting_check(token: CompactToken, key: RSAKey) -> bool:
        seen.append(token.signing_input.decode())
        return real_check(token, key)

    monkeypatch.setattr(shared.web.verifier, "signature_matches", counting_check)
    return seen


def signed_part(token: str) -> str:
    return token.rpartition(".")[0]


async def open_verifier(issuer: Issuer, clock: Clock, capacity: int = 100) -> tuple[TokenVerifier, JWKSCache]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(issuer))
    cache = JWKSCache(JWKSConfig(url=JWKS_URL, refresh_interval=3600, retry_interval=3600), client)
    await cache.start()
    return TokenVerifier(POLICY, cache, clock=clock, verified=VerifiedTokens(capacity)), cache


async def test_a_reused_token_is_checked_once(key: RSAKey, decodes: list[str]) -> None:
    verifier, cache = await open_verifier(Issuer(key), Clock())
    token = mint(key)
    try:
        first = await verifier.verify(token)
        second = await verifier.verify(token)
    finally:
        await cache.aclose()

    assert first == second
    assert decodes == [signed_part(token)]
    assert verifier.cache_hits == 1
    assert verifier.verified_count == 2


async def test_a_remembered_token_still_expires(key: RSAKey, decodes: list[str]) -> None:
    clock = Clock()
    verifier, cache = await open_verifier(Issuer(key), clock)
    token = mint(key)
    try:
        await verifier.verify(token)
        clock.now = NOW + 300 + POLICY.leeway  # exp plus the leeway: dead from this second on
        with pytest.raises(InvalidToken) as caught:
            await verifier.verify(token)
    finally:
        await cache.aclose()
    assert caught.value.reason == "expired"


async def test_a_remembered_token_dies_with_its_key(key: RSAKey, decodes: list[str]) -> None:
    issuer = Issuer(key)
    verifier, cache = await open_verifier(issuer, Clock())
    token = mint(key)
    try:
        await verifier.verify(token)
        issuer.keys = [RSAKey.generate_key(2048, parameters={"kid": "key-2"})]
        await cache.refresh()
        with pytest.raises(InvalidToken) as caught:
            await verifier.verify(token)
    finally:
        await cache.aclose()
    assert caught.value.reason == "unknown_kid"


async def test_a_rejected_token_is_never_remembered(key: RSAKey, decodes: list[str]) -> None:
    verifier, cache = await open_verifier(Issuer(key), Clock())
    wrong_audience = mint(key, good_claims(aud="gateway"))
    try:
        for _ in range(2):
            with pytest.raises(InvalidToken):
                await verifier.verify(wrong_audience)
    finally:
        await cache.aclose()
    assert decodes == [signed_part(wrong_audience)] * 2
    assert verifier.cache_hits == 0


async def test_capacity_zero_checks_every_time(key: RSAKey, decodes: list[str]) -> None:
    verifier, cache = await open_verifier(Issuer(key), Clock(), capacity=0)
    token = mint(key)
    try:
        await verifier.verify(token)
        await verifier.verify(token)
    finally:
        await cache.aclose()
    assert decodes == [signed_part(token)] * 2
