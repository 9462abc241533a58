"""The verified-token memory: hits until expiry, bounded, and forgetful when a key goes."""

from __future__ import annotations

import pytest

from shared.core.tokens import AccessClaims
from shared.web.verified_cache import VerifiedTokens

KIDS = {"k", "kid-1"}


def claims(sub: str = "user-1", exp: int = 1300) -> AccessClaims:
    return AccessClaims(
        sub=sub,
        aud="orders",
        iss="http://issuer",
        jti=f"jti-{sub}",
        iat=exp - 300,
        exp=exp,
        sid=None,
        client_id=None,
        role="user",
        scope=None,
    )


def test_a_remembered_token_is_returned_until_it_expires() -> None:
    cache = VerifiedTokens()
    cache.put("token-a", "kid-1", claims(), expires_at=1310.0)

    assert cache.get("token-a", 1309.9, KIDS) == claims()
    assert cache.get("token-a", 1310.0, KIDS) is None
    assert len(cache) == 0, "an expired entry is dropped when found"


def test_only_the_exact_token_string_hits() -> None:
    cache = VerifiedTokens()
    cache.put("token-a", "kid-1", claims(), expires_at=1310.0)

    assert cache.get("token-a ", 1000.0, KIDS) is None
    assert cache.get("token-A", 1000.0, KIDS) is None


def test_tokens_of_a_withdrawn_key_are_forgotten() -> None:
    cache = VerifiedTokens()
    cache.put("old", "kid-old", claims("a"), expires_at=1310.0)
    cache.put("new", "kid-new", claims("b"), expires_at=1310.0)

    assert cache.get("old", 1000.0, {"kid-new"}) is None
    assert cache.get("new", 1000.0, {"kid-new"}) == claims("b")
    assert len(cache) == 1
    assert cache.get("old", 1000.0, {"kid-old", "kid-new"}) is None, "forgotten, not hidden"


def test_a_full_cache_of_live_entries_drops_the_oldest() -> None:
    cache = VerifiedTokens(capacity=2)
    for name in ("first", "second", "third"):
        cache.put(name, "k", claims(name), expires_at=1310.0)

    assert cache.get("first", 1000.0, KIDS) is None
    assert cache.get("third", 1000.0, KIDS) == claims("third")
    assert len(cache) == 2


def test_capacity_zero_remembers_nothing() -> None:
    cache = VerifiedTokens(capacity=0)
    cache.put("token", "k", claims(), expires_at=1310.0)
    assert cache.get("token", 1000.0, KIDS) is None


def test_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        VerifiedTokens(capacity=-1)
