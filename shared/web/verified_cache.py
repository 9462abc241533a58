"""A bounded memory of tokens already verified, so a client reusing its token costs a lookup.

Real clients send the same access token for up to five minutes. Checking its RS256
signature again on every request buys nothing: the exact same bytes verified a moment ago
verify again until the token expires or its key is withdrawn. So a successful verification
is remembered, keyed by the exact token string, until the token's own expiry (plus the
verifier's leeway), and forgotten as soon as the key that signed it leaves the key set.
Failures are never remembered: a bad token always takes the full path, and its reason is
reported every time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass

from shared.core.tokens import AccessClaims


@dataclass(frozen=True)
class _Entry:
    claims: AccessClaims
    kid: str
    expires_at: float


class VerifiedTokens:
    """Verified claims by token string, at most ``capacity`` of them; 0 turns the cache off.

    When full, the oldest entry makes room: every token lives the same five minutes, so the
    oldest is also the nearest to expiry, and eviction costs O(1) rather than a scan (a scan
    of 10,000 entries per request made a stream of new tokens four times slower). Expired
    entries are dropped when looked up.
    """

    def __init__(self, capacity: int = 10_000):
        if capacity < 0:
            raise ValueError("capacity must not be negative")
        self.capacity = capacity
        # OrderedDict, not dict: popping a plain dict's first item again and again walks over
        # the holes earlier pops left, which is O(n) until the dict is rebuilt.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float, published: Container[str]) -> AccessClaims | None:
        """The claims ``token`` verified to, while it is within its lifetime and its key is published.

        ``published`` is the verifier's current key set: a token whose key has been withdrawn
        (or a verifier that has failed closed and holds no keys) never hits.
        """
        entry = self._entries.get(token)
        if entry is None:
            return None
        if now >= entry.expires_at or entry.kid not in published:
            del self._entries[token]
            return None
        return entry.claims

    def put(self, token: str, kid: str, claims: AccessClaims, *, expires_at: float) -> None:
        """Remember a token that has just passed every check, until ``expires_at``."""
        if self.capacity == 0:
            return
        if token not in self._entries and len(self._entries) >= self.capacity:
            self._entries.popitem(last=False)
        self._entries[token] = _Entry(claims, kid, expires_at)
