"""The revocation feed of one auth worker: the set signed once per version, and long-polls woken on change.

Every worker polls the set's version in Redis (one small read every ``poll_interval``), so a
revocation recorded by any replica or worker reaches the long-polls held here within about that
interval; nothing needs a pub/sub channel, which would behave differently on Sentinel and Cluster.
The feed is signed when its version (or the signing key) changes, never per request: a
thousand verifiers polling cost a thousand cached byte strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from services.auth import revocations
from services.auth.key_store import KeyFileError, KeyStore
from services.auth.revocations import Entry
from services.auth.store import RevocationSet, RevocationStore
from shared.core import ServiceUnavailable
from shared.web import Periodic, cancel_and_wait

logger = logging.getLogger(__name__)

#: The longest a recording waits for this worker to publish the new feed (the rest runs on).
PUBLISH_WAIT = 0.5


@dataclass(frozen=True)
class Published:
    """One signed version of the feed, as every request for it gets it."""

    epoch: str
    version: int
    entries: tuple[Entry, ...]
    kid: str
    body: bytes

    @property
    def first_end(self) -> float:
        """When the first of its entries ends (infinity for none): the feed is signed again then."""
        return min((entry.until for entry in self.entries), default=math.inf)

    @property
    def etag(self) -> str:
        return revocations.etag(self.epoch, self.version)


class RevocationFeed:
    """The worker's copy of the revocation set, kept current by a background poll of Redis.

    ``max_waiters`` bounds the long-polls held at once: each holds one of the edge's in-flight
    slots, so past the bound a request is answered at once (as a plain conditional GET) instead
    of held, and logins and tokens keep their slots.
    """

    def __init__(
        self,
        store: RevocationStore,
        keys: KeyStore,
        *,
        issuer: str,
        poll_interval: float,
        max_waiters: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._keys = keys
        self._issuer = issuer
        self._clock = clock
        self.max_waiters = max_waiters
        self._poller = Periodic(self._poll, poll_interval, name="revocation-feed-poll", immediately=True)
        self._published: Published | None = None
        self._first_end = math.inf
        self._changed = asyncio.Event()
        self._refreshing = asyncio.Lock()
        self._nudges: set[asyncio.Task[None]] = set()
        self._failing = False
        self.waiters = 0
        self.waits_declined = 0
        self.republished = 0
        self.signed = 0
        self.poll_failures = 0

    async def __aenter__(self) -> RevocationFeed:
        self._poller.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._poller.aclose()
        for nudge in list(self._nudges):
            await cancel_and_wait(nudge)

    @property
    def ready(self) -> bool:
        """Whether a signed feed is at hand (readiness: verifiers start by fetching it)."""
        return self._published is not None

    @property
    def published(self) -> Published | None:
        return self._published

    async def current(self) -> Published:
        """The feed as last signed, loading it first if this worker has none yet."""
        if self._published is None:
            await self.refresh()
        if self._published is None:
            raise ServiceUnavailable("the revocation set is unavailable")
        return self._published

    async def record(self, entries: Sequence[Entry]) -> None:
        """Add ``entries`` to the set and have this worker publish it now; other workers poll for it.

        The caller (a logout) waits for this worker's new feed at most :data:`PUBLISH_WAIT`
        seconds: long enough that its own next read of the feed shows the entry, short of the
        seconds signing takes on a set of 100,000 entries.
        """
        if not entries:
            return
        await self._store.record(entries, self._clock())
        nudge = asyncio.create_task(self._poll(), name="revocation-feed-nudge")
        self._nudges.add(nudge)
        nudge.add_done_callback(self._nudges.discard)
        await asyncio.wait({nudge}, timeout=PUBLISH_WAIT)

    async def _poll(self) -> None:
        # A failure is counted and logged once by refresh; the loop goes on with the last feed.
        with contextlib.suppress(ServiceUnavailable):
            await self.refresh()
        # A cancellation swallowed on the way (the Redis client can turn one that races its own
        # deadline into an error) must still end the loop, or shutdown waits for it for ever.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    async def refresh(self) -> None:
        """Publish the set again if its version or the signing key changed since the last look."""
        async with self._refreshing:
            try:
                await self._refresh()
            except ServiceUnavailable:
                self.poll_failures += 1
                if not self._failing:
                    logger.warning("revocation set unreadable; serving the last one signed")
                self._failing = True
                if self._published is None:
                    raise
                return
            if self._failing:
                logger.info("revocation set readable again")
                self._failing = False

    async def _refresh(self) -> None:
        held = self._published
        probe = await self._store.probe()
        if held is not None and probe == (held.epoch, held.version):
            # Signed again without what has ended, under the same version: a verifier drops an
            # ended entry itself, so what it holds under that ETag means the same.
            if self._signing_kid() != held.kid or self._clock() >= self._first_end:
                await self._publish(RevocationSet(held.epoch, held.version, held.entries))
            return
        current = await self._store.read(self._clock())
        if held is not None and current.epoch != held.epoch:
            current = await self._restore(held, current)
        await self._publish(current)

    async def _restore(self, held: Published, current: RevocationSet) -> RevocationSet:
        """Redis lost the set this worker held (a restart without its data): record it again.

        The entries keep their cutoffs; the new epoch and version tell verifiers it is a new set.
        """
        now = self._clock()
        missing = revocations.missing_from(held.entries, current.entries, now)
        if not missing:
            return current
        self.republished += 1
        logger.warning(
            "the revocation set in Redis is new (epoch %s, was %s): recording the %d live entries held here"
            " again",
            current.epoch,
            held.epoch,
            len(missing),
        )
        await self._store.record(missing, now)
        return await self._store.read(now)

    def _signing_kid(self) -> str:
        try:
            return self._keys.keyring.active_kid(self._clock())
        except KeyFileError:
            return ""

    async def _publish(self, current: RevocationSet) -> None:
        now = self._clock()
        entries = await asyncio.to_thread(revocations.live, current.entries, now)
        if revocations.key_revoked(entries, self._signing_kid(), now):
            # The key-compromise drill retires the key on disk, then records the entry; pick the
            # retirement up now rather than at the next scheduled reload. A feed signed by a
            # revoked key would be refused by every verifier.
            self._keys.reload_if_changed()
            if revocations.key_revoked(entries, self._signing_kid(), now):
                logger.error("the signing key is revoked by the feed it signs; verifiers will refuse it")
        claims = revocations.feed_claims(self._issuer, now, current.epoch, current.version, entries)
        # Off the event loop: at 100,000 entries encoding and signing take most of a second.
        body, kid = await asyncio.to_thread(self._sign, claims)
        self.signed += 1
        self._published = Published(current.epoch, current.version, entries, kid, body)
        self._first_end = self._published.first_end
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _sign(self, claims: dict[str, Any]) -> tuple[bytes, str]:
        token, kid = self._keys.sign_payload(msgspec.json.encode(claims), typ=revocations.FEED_TYPE)
        return token.encode("ascii"), kid

    @contextlib.asynccontextmanager
    async def holding(self) -> AsyncIterator[bool]:
        """Count one long-poll while it is held; yields False (hold nothing) past ``max_waiters``."""
        if self.waiters >= self.max_waiters:
            self.waits_declined += 1
            yield False
            return
        self.waiters += 1
        try:
            yield True
        finally:
            self.waiters -= 1

    async def changed_from(self, etag: str, wait: float, *until: asyncio.Future[None] | None) -> Published:
        """The feed once its ETag differs from ``etag``, or the same feed after ``wait`` seconds
        or as soon as one of ``until`` completes (the server shutting down, the client gone)."""
        published = await self.current()
        deadline = asyncio.get_running_loop().time() + wait
        ends = {future for future in until if future is not None}
        while published.etag == etag:
            if any(future.done() for future in ends):
                return published
            changed = asyncio.ensure_future(self._changed.wait())
            waited: set[asyncio.Future[Any]] = {changed, *ends}
            try:
                await asyncio.wait(
                    waited,
                    timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                changed.cancel()
            if asyncio.get_running_loop().time() >= deadline:
                return await self.current()
            published = await self.current()
        return published
