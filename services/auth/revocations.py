"""Revocation cutoffs, pure: what an entry covers, how long it lives, and the feed that lists them.

A revocation is a cutoff, never a token id: "tokens of session ``sid`` (or user ``sub``, or
signed by key ``kid``) issued before ``before``". One entry covers every token the session ever
minted, and it lives only while a token it covers could still be valid, so the set is bounded by
recent critical operations, never by traffic. The format is written down in
docs/decisions/0008-revocation-feed.md for verifiers in other languages.

Nothing here performs I/O or reads a clock; callers pass ``now`` in (seconds since the epoch).
"""

from __future__ import annotations

import enum
import math
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: The ``typ`` of the feed's JWS header, and the media type it is served as.
FEED_TYPE = "revocations+jwt"
MEDIA_TYPE = "application/revocations+jwt"
#: The largest clock skew a verifier may allow (DESIGN: leeway <= 30 s): an entry outlives every
#: token it covers by this much, whatever leeway a verifier is configured with.
MAX_LEEWAY = 30
#: The longest a long-poll is held (``Prefer: wait=N`` is capped to this).
MAX_WAIT = 30

# What an id may look like: sids are hex, subs are hex uuids, kids base64url. The separator of the
# stored form (a newline) can never appear, and a hostile id cannot bloat the feed.
_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_SEPARATOR = "\n"


class Kind(enum.StrEnum):
    """What an entry's ``id`` names, and so which part of a token it is compared with."""

    SESSION = "session"  # the token's ``sid``
    USER = "user"  # the token's ``sub``
    KEY = "key"  # the kid in the token's JWS header


@dataclass(frozen=True, order=True)
class Entry:
    """Tokens of ``kind`` ``id`` with ``iat < before`` are revoked; the entry ends at ``until``."""

    kind: Kind
    id: str
    before: int
    until: int

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"a revocation id must match {_ID.pattern}")
        if self.until <= self.before:
            raise ValueError("a revocation must end after its cutoff")

    def as_member(self) -> str:
        """The stored form (a sorted set's member, scored by ``until``)."""
        return _SEPARATOR.join((self.kind, self.id, str(self.before)))

    @classmethod
    def from_member(cls, member: str, until: float) -> Entry | None:
        """An entry read back from its stored form; None for a malformed one (which is skipped)."""
        try:
            kind, id_, before = member.split(_SEPARATOR)
            return cls(Kind(kind), id_, int(before), int(until))
        except ValueError:
            return None

    def as_claim(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "id": self.id, "before": self.before, "until": self.until}

    def covers(self, kind: Kind, id_: str, iat: int) -> bool:
        return self.kind is kind and self.id == id_ and iat < self.before


def cutoff(now: float) -> int:
    """The ``before`` of an operation at ``now``: every token minted in this second or earlier.

    Tokens carry ``iat = floor(now)`` of their minting, so the next whole second covers them all.
    """
    return math.floor(now) + 1


def revoke(kind: Kind, ids: Iterable[str], now: float, *, token_ttl: int) -> list[Entry]:
    """The entries for a session or user revocation at ``now``: each lives until its last token expires."""
    before = cutoff(now)
    return [Entry(kind, id_, before, before + token_ttl + MAX_LEEWAY) for id_ in ids]


def revoke_key(kid: str, now: float, *, token_ttl: int, jwks_max_age: int) -> Entry:
    """The entry for a compromised signing key.

    Whoever holds the key can sign tokens with any ``iat`` the verifiers still accept (up to their
    leeway ahead of now), for as long as a verifier still has the key in its JWKS cache (up to
    its max-age after the key leaves the JWKS). So the cutoff lies that far ahead, and every
    token the key can sign that anyone still accepts is covered, including ones auth itself signs
    before its replicas notice that the key was retired.
    """
    before = cutoff(now) + jwks_max_age + MAX_LEEWAY
    return Entry(Kind.KEY, kid, before, before + token_ttl + MAX_LEEWAY)


def live(entries: Iterable[Entry], now: float) -> tuple[Entry, ...]:
    """The entries still in force at ``now``, one per kind and id (the latest cutoff), in a stable order.

    An entry ends when ``until`` has passed; of two entries for the same session, the later
    cutoff covers everything the earlier one does.
    """
    latest: dict[tuple[Kind, str], Entry] = {}
    for entry in entries:
        if entry.until <= now:
            continue
        held = latest.get((entry.kind, entry.id))
        if held is None or (entry.before, entry.until) > (held.before, held.until):
            latest[(entry.kind, entry.id)] = entry
    return tuple(sorted(latest.values(), key=_order))


def _order(entry: Entry) -> tuple[str, str, int]:
    # A key function: comparing the dataclasses themselves is ten times slower at 100,000 entries.
    return (entry.kind, entry.id, entry.before)


def key_revoked(entries: Iterable[Entry], kid: str, now: float) -> bool:
    """Whether a live ``key`` entry names ``kid`` (a feed must not be signed by such a key)."""
    return any(entry.kind is Kind.KEY and entry.id == kid and entry.until > now for entry in entries)


def missing_from(held: Iterable[Entry], current: Iterable[Entry], now: float) -> list[Entry]:
    """The live entries of ``held`` that ``current`` does not cover as well: what to publish again.

    Used when Redis comes back without the set a replica still holds in memory: auth must not
    silently forget a revocation.
    """
    have = {(entry.kind, entry.id): entry for entry in live(current, now)}
    missing = []
    for entry in live(held, now):
        other = have.get((entry.kind, entry.id))
        if other is None or other.before < entry.before:
            missing.append(entry)
    return missing


def new_epoch() -> str:
    """A fresh id for a set created in Redis: a verifier tells a new set from a replayed old one."""
    return secrets.token_urlsafe(12)


def etag(epoch: str, version: int) -> str:
    return f'"{epoch}.{version}"'


def feed_claims(
    issuer: str, now: float, epoch: str, version: int, entries: Sequence[Entry]
) -> dict[str, Any]:
    """The feed's JWS payload (encode it compact, without spaces)."""
    return {
        "iss": issuer,
        "iat": int(now),
        "epoch": epoch,
        "version": version,
        "entries": [entry.as_claim() for entry in entries],
    }


def not_modified(if_none_match: Sequence[str], current: str) -> bool:
    """Whether ``If-None-Match`` (RFC 9110: a list of tags, ``W/`` compared weakly, or ``*``) matches."""
    for header in if_none_match:
        for tag in header.split(","):
            tag = tag.strip()
            if tag == "*" or tag.removeprefix("W/") == current:
                return True
    return False


def wanted_wait(prefer: Sequence[str], cap: int = MAX_WAIT) -> int | None:
    """The seconds a client asks to be held by ``Prefer: wait=N`` (RFC 7240), capped; None if absent.

    A malformed or negative value is ignored, as RFC 7240 asks of a preference not understood.
    """
    for header in prefer:
        for preference in header.split(","):
            name, _, value = preference.split(";")[0].partition("=")
            if name.strip().lower() != "wait":
                continue
            value = value.strip().strip('"')
            if value.isdigit() and len(value) <= 6:
                return min(int(value), cap)
    return None
