"""Choosing an upstream: round robin over the origins of a route that pass their health checks.

Pure state and rules, no I/O: the health checker and the proxy report what they saw
(:meth:`Pool.mark_down`, :meth:`Pool.mark_up`) and ask which origin to use (:meth:`Pool.choose`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# HTTP methods a client may repeat without changing anything (RFC 9110 9.2.1); the only ones the
# gateway sends a second time after the first attempt may have reached an upstream.
SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class Member:
    """One origin of a pool and what the gateway last learned about it."""

    url: str
    healthy: bool = True
    changed_at: float = 0.0
    reason: str | None = None
    marked_down: dict[str, int] = field(default_factory=dict)

    def status(self, now: float) -> dict[str, Any]:
        """A summary for the readiness detail."""
        return {
            "url": self.url,
            "healthy": self.healthy,
            "for_seconds": round(now - self.changed_at, 1),
            "reason": self.reason,
        }


class Pool:
    """The origins of one upstream name (``auth``), served round robin among the healthy ones.

    A pool of one origin is never taken out of service, as nginx does with a single server:
    there is nowhere else to send the request, and refusing it would only delay recovery until
    the next health check. Its health is still tracked and reported.
    """

    def __init__(self, name: str, urls: Sequence[str], *, clock: Callable[[], float] = time.monotonic):
        if not urls:
            raise ValueError(f"upstream {name!r} needs at least one origin")
        if len(set(urls)) != len(urls):
            raise ValueError(f"upstream {name!r} lists an origin twice")
        self.name = name
        self._clock = clock
        now = clock()
        self.members = tuple(Member(url, changed_at=now) for url in urls)
        self._next = 0
        self.retries: dict[str, int] = {}

    @property
    def balanced(self) -> bool:
        """True when there is more than one origin to choose from."""
        return len(self.members) > 1

    @property
    def available(self) -> bool:
        """Whether :meth:`choose` can return an origin at all."""
        return not self.balanced or any(member.healthy for member in self.members)

    def choose(self, exclude: Collection[str] = ()) -> Member | None:
        """The next origin in turn that is healthy and not in ``exclude``; None when there is none."""
        count = len(self.members)
        for step in range(count):
            member = self.members[(self._next + step) % count]
            if member.url in exclude or not (member.healthy or not self.balanced):
                continue
            self._next = (self._next + step + 1) % count
            return member
        return None

    def member(self, url: str) -> Member:
        """The member for ``url``; a :class:`KeyError` for a URL the pool does not hold."""
        for member in self.members:
            if member.url == url:
                return member
        raise KeyError(url)

    def mark_down(self, url: str, cause: str, reason: str) -> bool:
        """Take ``url`` out of rotation; True when it was healthy until now.

        ``cause`` is a short label for metrics (``connect``, ``health_check``); ``reason`` a text
        for the readiness detail and logs.
        """
        member = self.member(url)
        member.reason = reason
        if not member.healthy:
            return False
        member.healthy = False
        member.changed_at = self._clock()
        member.marked_down[cause] = member.marked_down.get(cause, 0) + 1
        return True

    def mark_up(self, url: str) -> bool:
        """Put ``url`` back into rotation; True when it was down until now."""
        member = self.member(url)
        if member.healthy:
            return False
        member.healthy = True
        member.changed_at = self._clock()
        member.reason = None
        return True

    def count_retry(self, cause: str) -> None:
        """Note that a request went to a second origin after ``cause`` (``connect``, ``after_send``)."""
        self.retries[cause] = self.retries.get(cause, 0) + 1

    def status(self) -> dict[str, Any]:
        """Every origin's health, for the readiness detail."""
        now = self._clock()
        return {
            "available": self.available,
            "members": [member.status(now) for member in self.members],
        }


def pools(
    urls: Mapping[str, Sequence[str]], *, clock: Callable[[], float] = time.monotonic
) -> dict[str, Pool]:
    """One pool per upstream name."""
    return {name: Pool(name, origins, clock=clock) for name, origins in urls.items()}


def every_member(all_pools: Iterable[Pool]) -> list[tuple[Pool, Member]]:
    """Each origin of each pool with its pool, for the health checker."""
    return [(pool, member) for pool in all_pools for member in pool.members]


def may_retry_after_send(method: str) -> bool:
    """Whether a request that failed after it may have reached an upstream can be sent to another.

    Only safe methods: a POST whose connection broke after it was written may have been
    processed (a session created, a token minted, an order placed), and sending it again
    could do it twice. A connect failure is different: nothing was sent, so any method
    may go elsewhere.
    """
    return method.upper() in SAFE_METHODS
