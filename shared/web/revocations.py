"""The issuer's revocation feed: signed cutoffs held in memory, so a revoked token is refused locally.

Auth publishes every live revocation at ``/.well-known/revocations.json`` as one compact JWS
(``typ: revocations+jwt``) signed by its active key. A revocation is a cutoff, never a token id:
"tokens of session ``sid`` (or user ``sub``) issued before ``before``", or "every token signed by
``kid``". This module fetches that feed with the JWKS fetch rules, verifies it with the keys of
the verifier's own :class:`~shared.web.jwks.JWKSCache`, refuses replays of older feeds, and keeps
the entries in dicts keyed by id, so checking a token costs two dictionary lookups.

It refreshes by long-poll (``If-None-Match`` with ``Prefer: wait=N``, RFC 7240): auth holds the
request until the feed changes, so a new revocation arrives as one answer, typically within tens
of milliseconds, at the cost of one idle connection. An issuer that ignores the preference is
polled every ``poll_interval`` with a conditional GET instead. The failure policy and the
attacks this refuses are in ``SECURITY.md`` ("Revocation feed").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import httpx
import msgspec
from joserfc.jwk import RSAKey

from shared.core.tokens import (
    ALGORITHM,
    ALLOWED_HEADER_MEMBERS,
    MAX_KID_LENGTH,
    AccessClaims,
    CompactToken,
    loads_strict,
)
from shared.web.jwks import JWKSCache, signature_matches
from shared.web.periodic import cancel_and_wait

logger = logging.getLogger(__name__)

FEED_TYPE = "revocations+jwt"
MEDIA_TYPE = "application/revocations+jwt"
#: Auth caps a long-poll at this many seconds (the contract's bound).
MAX_WAIT_SECONDS = 30
# Sessions and users are opaque handles of a few dozen characters; a longer id is a broken feed.
MAX_ID_LENGTH = 1024
MAX_EPOCH_LENGTH = 256
# A server that claims to hold long-polls but answers at once must not turn the loop into a spin.
_LONG_POLL_FLOOR = 0.05
_MAX_BACKOFF = 5.0
# Feeds up to this size (about 500 entries) are checked on the event loop: a thread costs more.
_INLINE_BYTES = 64 * 1024


class RevocationFeedError(Exception):
    """A feed answer not accepted: ``reason`` is a short code for metrics, the message is safe to log."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class RevocationConfig:
    """Where the feed lives, how it is refreshed, and what happens when it cannot be had.

    ``wait`` is the long-poll the verifier asks for (0 turns long-polling off); ``poll_interval``
    is the pace of conditional GETs when the issuer does not hold requests. After ``max_stale``
    seconds without a successful answer the cache is not ready and, with ``fail_closed``, every
    token is answered 503.
    """

    url: str
    fallback_urls: tuple[str, ...] = ()
    wait: int = 20
    poll_interval: float = 1.0
    timeout: float = 3.0
    max_bytes: int = 16 * 1024 * 1024
    max_stale: float = 60.0
    fail_closed: bool = True
    retry_interval: float = 0.5

    @property
    def urls(self) -> tuple[str, ...]:
        """Every URL of the feed, the primary first."""
        return (self.url, *self.fallback_urls)


class Cutoff(msgspec.Struct, frozen=True, gc=False):
    """One feed entry: tokens of ``kind`` ``id`` issued before ``before`` are covered; after
    ``until`` none of them can still be valid. Decoded straight from the feed (no copy per entry)."""

    kind: str
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    before: Annotated[int, msgspec.Meta(ge=0)]
    until: Annotated[int, msgspec.Meta(ge=0)]


@dataclass(frozen=True)
class RevocationSet:
    """One verified feed: its identity (epoch, version, iat), signer, and its entries by kind and id."""

    kid: str
    iat: int
    epoch: str
    version: int
    sessions: dict[str, Cutoff]
    users: dict[str, Cutoff]
    keys: dict[str, Cutoff]

    @property
    def size(self) -> int:
        return len(self.sessions) + len(self.users) + len(self.keys)

    @property
    def etag(self) -> str:
        return f'"{self.epoch}.{self.version}"'

    def next_expiry(self, now: float) -> float:
        """The earliest ``until`` still ahead of ``now``: before it, a sweep would drop nothing new."""
        ahead = [
            cut.until
            for table in (self.sessions, self.users, self.keys)
            for cut in table.values()
            if cut.until > now
        ]
        return min(ahead, default=math.inf)

    def without_expired(self, now: float, published: Mapping[str, object]) -> RevocationSet:
        """The set minus entries past ``until``; a revoked key stays while the JWKS still publishes it.

        After ``until`` no token the issuer minted with that key can be valid, but anyone holding
        the compromised key can mint fresh ones, so its entry outlives ``until`` as long as the key
        is still among the verifier's keys.
        """

        def live(entries: dict[str, Cutoff]) -> dict[str, Cutoff]:
            return {id_: cut for id_, cut in entries.items() if cut.until > now}

        keys = {kid: cut for kid, cut in self.keys.items() if cut.until > now or kid in published}
        return RevocationSet(
            self.kid, self.iat, self.epoch, self.version, live(self.sessions), live(self.users), keys
        )


_TO_STANDARD_BASE64 = bytes.maketrans(b"-_", b"+/")


def _decode_part(segment: bytes) -> bytes:
    # bytes.translate and binascii's strict mode check the alphabet at C speed: a feed of
    # 100,000 entries is 12 MiB, where the token path's regex check took half a second. The
    # canonical-spelling rule of tokens is not needed: the signature covers the exact text.
    if not segment or len(segment) % 4 == 1 or any(char in segment for char in b"=+/"):
        raise ValueError("not unpadded base64url")
    try:
        return base64.b64decode(
            segment.translate(_TO_STANDARD_BASE64) + b"=" * (-len(segment) % 4), validate=True
        )
    except binascii.Error:
        raise ValueError("not unpadded base64url") from None


def read_feed(body: bytes) -> CompactToken:
    """The compact JWS of a feed answer, its protected header checked; the signature is unchecked."""
    try:
        header_segment, payload_segment, signature_segment = body.strip().split(b".")
        header = loads_strict(_decode_part(header_segment))
        payload = _decode_part(payload_segment)
        signature = _decode_part(signature_segment)
    except ValueError:  # a wrong number of segments and bad UTF-8 in the header included
        raise RevocationFeedError("malformed", "the feed is not a compact JWS") from None
    if not isinstance(header, dict) or not header.keys() <= ALLOWED_HEADER_MEMBERS:
        raise RevocationFeedError("header", "the feed header has members other than alg, kid and typ")
    if header.get("alg") != ALGORITHM:
        raise RevocationFeedError("algorithm", "the feed is not signed with RS256")
    if header.get("typ") != FEED_TYPE:
        raise RevocationFeedError("type", f"the feed's typ is not {FEED_TYPE}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise RevocationFeedError("kid", "the feed header has no usable kid")
    return CompactToken(kid, header_segment + b"." + payload_segment, signature, payload)


class _Payload(msgspec.Struct):
    iss: str
    iat: Annotated[int, msgspec.Meta(ge=0)]
    epoch: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EPOCH_LENGTH)]
    version: Annotated[int, msgspec.Meta(ge=0)]
    entries: list[Cutoff]


# msgspec validates the shapes in C: the standard library's strict decoder took five times longer.
_PAYLOAD = msgspec.json.Decoder(_Payload)


def read_payload(token: CompactToken, issuer: str) -> RevocationSet:
    """The entries of a feed whose signature has been verified; a malformed feed is refused whole."""
    try:
        document = _PAYLOAD.decode(token.payload)
    except msgspec.ValidationError as exc:
        raise RevocationFeedError("malformed", f"the feed payload is malformed: {exc}") from None
    except msgspec.DecodeError:
        raise RevocationFeedError("malformed", "the feed payload is not JSON") from None
    if document.iss != issuer:
        raise RevocationFeedError("issuer", "the feed was issued by someone else")
    by_kind: dict[str, dict[str, Cutoff]] = {"session": {}, "user": {}, "key": {}}
    for cut in document.entries:
        table = by_kind.get(cut.kind)
        if table is None:
            # A kind added by a newer issuer: skipping it keeps every kind this verifier knows.
            continue
        held = table.get(cut.id)
        if held is not None:
            cut = Cutoff(cut.kind, cut.id, max(held.before, cut.before), max(held.until, cut.until))
        table[cut.id] = cut
    return RevocationSet(
        token.kid,
        document.iat,
        document.epoch,
        document.version,
        by_kind["session"],
        by_kind["user"],
        by_kind["key"],
    )


def check_successor(held: RevocationSet | None, new: RevocationSet) -> None:
    """Refuse a feed that is older than the one held, or signed by a key either of them revokes."""
    if new.kid in new.keys or (held is not None and new.kid in held.keys):
        raise RevocationFeedError("revoked_kid", "the feed is signed by a revoked key")
    if held is None:
        return
    if new.epoch == held.epoch:
        if new.version < held.version:
            raise RevocationFeedError("replay", "the feed is older than the one held")
    elif new.iat <= held.iat:
        raise RevocationFeedError("replay", "a feed of another epoch is not newer than the one held")


class _Answer(NamedTuple):
    outcome: str  # "changed", "unchanged" or "unpublished"
    long_polled: bool


class RevocationCache:
    """The live revocations for one verifier. Open with :meth:`start`, close with :meth:`aclose`.

    Until the first successful answer (and again after ``max_stale`` seconds without one) it
    counts as stale, measured from :meth:`start`: a verifier that starts while the feed is down
    trusts its empty view exactly as long as it would trust a feed it had lost, then follows the
    failure policy. A 404 before any feed was accepted means the issuer publishes no revocations
    (an issuer older than the feed): reported in :meth:`status`, never an outage. Once a signed
    feed has been accepted, a 404 is a failure, so the feed cannot be silently withdrawn.
    """

    def __init__(
        self,
        config: RevocationConfig,
        issuer: str,
        keys: JWKSCache,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.issuer = issuer
        self._keys = keys
        self._client = client
        self._clock = clock
        self._wall_clock = wall_clock
        self._set: RevocationSet | None = None
        self._sessions: dict[str, Cutoff] = {}
        self._users: dict[str, Cutoff] = {}
        #: Kids whose every token is refused; read by the verifier on each request.
        self.revoked_kids: dict[str, Cutoff] = {}
        self._next_expiry = math.inf
        self._published: bool | None = None
        self._fresh_at = clock()
        self._failures_in_a_row = 0
        self._last_error: str | None = None
        self._preferred = 0
        self._task: asyncio.Task[None] | None = None
        self.fetch_count = 0
        self.changed_count = 0
        self.unchanged_count = 0
        self.failures: collections.Counter[str] = collections.Counter()

    @property
    def age(self) -> float:
        """Seconds since the last successful answer (or since :meth:`start` before the first)."""
        return self._clock() - self._fresh_at

    @property
    def ready(self) -> bool:
        """False while the view of revocations is older than ``max_stale``."""
        return self._clock() - self._fresh_at <= self.config.max_stale

    @property
    def refuses_all(self) -> bool:
        """True when the policy is to fail closed and the view is stale: every token gets a 503."""
        return self.config.fail_closed and self._clock() - self._fresh_at > self.config.max_stale

    @property
    def version(self) -> int | None:
        return None if self._set is None else self._set.version

    @property
    def entry_count(self) -> int:
        return len(self._sessions) + len(self._users) + len(self.revoked_kids)

    def covers(self, claims: AccessClaims) -> bool:
        """Whether a live session or user entry covers a token with these claims (two dict lookups)."""
        iat = claims.iat
        if claims.sid is not None:
            cut = self._sessions.get(claims.sid)
            if cut is not None and iat < cut.before:
                return True
        cut = self._users.get(claims.sub)
        return cut is not None and iat < cut.before

    def status(self) -> dict[str, Any]:
        """A summary for readiness probes and metrics; holds no session or user ids."""
        ready = self.ready
        return {
            "ready": ready,
            "reason": None if ready else f"no successful refresh for {self.age:.0f} s",
            "published": self._published,
            "fail_closed": self.config.fail_closed,
            "version": self.version,
            "entries": self.entry_count,
            "age_seconds": round(self.age, 1),
            "fetches": self.fetch_count,
            "failures": dict(sorted(self.failures.items())),
            "last_error": self._last_error,
        }

    async def start(self) -> None:
        """Try one load now (no long-poll) and keep refreshing in the background; never raises on failure."""
        self._fresh_at = self._clock()
        await self.refresh(wait=0)
        self._task = asyncio.create_task(self._run(), name="revocations-refresh")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            started = self._clock()
            answer = await self.refresh(wait=self.config.wait if self._set is not None else 0)
            if answer is None:
                delay = min(self.config.retry_interval * 2 ** (self._failures_in_a_row - 1), _MAX_BACKOFF)
            elif answer.long_polled or answer.outcome == "changed":
                # A changed feed comes back at once, held or not: the next ask is the one held.
                delay = _LONG_POLL_FLOOR - (self._clock() - started)
            else:
                delay = self.config.poll_interval - (self._clock() - started)
            if delay > 0:
                await asyncio.sleep(delay)

    async def refresh(self, *, wait: int = 0) -> _Answer | None:
        """One exchange with the feed (held up to ``wait`` seconds); None when it failed."""
        self.fetch_count += 1
        try:
            answer = await self._exchange_any(wait)
        except RevocationFeedError as exc:
            self.failures[exc.reason] += 1
            self._failures_in_a_row += 1
            self._last_error = str(exc)
            logger.warning(
                "revocation feed refresh failed; keeping %d entries",
                self.entry_count,
                extra={"error": self._last_error, "reason": exc.reason},
            )
            return None
        self._fresh_at = self._clock()
        self._failures_in_a_row = 0
        self._last_error = None
        if answer.outcome == "changed":
            self.changed_count += 1
        else:
            self.unchanged_count += 1
        self._drop_expired()
        return answer

    def _drop_expired(self) -> None:
        now = self._wall_clock()
        if self._set is not None and now >= self._next_expiry:
            self._install(self._set.without_expired(now, self._keys.keys()))

    def _install(self, feed: RevocationSet) -> None:
        self._set = feed
        self._sessions, self._users, self.revoked_kids = feed.sessions, feed.users, feed.keys
        self._next_expiry = feed.next_expiry(self._wall_clock())

    async def _exchange_any(self, wait: int) -> _Answer:
        urls = self.config.urls
        share = self.config.timeout / len(urls)
        errors: list[tuple[str, RevocationFeedError]] = []
        for step in range(len(urls)):
            index = (self._preferred + step) % len(urls)
            try:
                async with asyncio.timeout(share + wait):
                    answer = await self._exchange(urls[index], wait, share)
            except RevocationFeedError as exc:
                errors.append((urls[index], exc))
                continue
            except TimeoutError:
                error = RevocationFeedError("timeout", f"no answer within {share + wait:.1f} s")
                errors.append((urls[index], error))
                continue
            except httpx.HTTPError as exc:
                errors.append((urls[index], RevocationFeedError("network", str(exc) or type(exc).__name__)))
                continue
            self._preferred = index
            return answer
        if len(errors) == 1:
            raise errors[0][1]
        raise RevocationFeedError(errors[-1][1].reason, "; ".join(f"{url}: {exc}" for url, exc in errors))

    async def _exchange(self, url: str, wait: int, budget: float) -> _Answer:
        headers = {"Accept": MEDIA_TYPE}
        held = self._set
        if held is not None:
            headers["If-None-Match"] = held.etag
            if wait:
                headers["Prefer"] = f"wait={wait}"
        async with self._client.stream(
            "GET", url, headers=headers, follow_redirects=False, timeout=budget + wait
        ) as response:
            long_polled = bool(wait) and "preference-applied" in response.headers
            status = response.status_code
            if status == 304 and held is not None:
                return _Answer("unchanged", long_polled)
            if status == 404 and held is None:
                if self._published is not False:
                    logger.warning("the issuer publishes no revocation feed at %s", url)
                self._published = False
                return _Answer("unpublished", long_polled=False)
            if 300 <= status < 400:
                raise RevocationFeedError("redirect", f"the feed answered a redirect (HTTP {status})")
            if status != 200:
                raise RevocationFeedError("status", f"the feed answered HTTP {status}")
            media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != MEDIA_TYPE:
                raise RevocationFeedError("content_type", f"the feed is not {MEDIA_TYPE}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.config.max_bytes:
                raise RevocationFeedError(
                    "too_large", f"the feed is larger than {self.config.max_bytes} bytes"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.config.max_bytes:
                    raise RevocationFeedError(
                        "too_large", f"the feed is larger than {self.config.max_bytes} bytes"
                    )
                chunks.append(chunk)
        await self._accept(b"".join(chunks))
        return _Answer("changed", long_polled)

    async def _accept(self, body: bytes) -> None:
        # A feed of 100,000 entries takes about a second of CPU to check: in a thread, so the
        # requests this process is serving meanwhile wait for the GIL, not for the whole parse.
        inline = len(body) <= _INLINE_BYTES
        token = read_feed(body) if inline else await asyncio.to_thread(read_feed, body)
        key = await self._keys.key_for(token.kid)
        if key is None:
            raise RevocationFeedError("unknown_kid", "the feed is signed by a key the JWKS does not hold")
        check = (token, key, self.issuer, self._wall_clock(), self._keys.keys())
        feed = _verified_set(*check) if inline else await asyncio.to_thread(_verified_set, *check)
        check_successor(self._set, feed)
        self._published = True
        self._install(feed)
        logger.info("revocation feed version %d accepted", feed.version, extra={"entries": feed.size})


def _verified_set(
    token: CompactToken, key: RSAKey, issuer: str, now: float, published: Mapping[str, object]
) -> RevocationSet:
    if not signature_matches(token, key):
        raise RevocationFeedError("signature", "the feed's signature does not verify")
    return read_payload(token, issuer).without_expired(now, published)
