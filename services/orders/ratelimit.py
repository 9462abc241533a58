"""A token bucket per user, in this process's memory: how fast one user may place orders.

Per process on purpose: orders keeps no shared state but its SQLite file and never connects to
Redis, so with ``ORDERS_WORKERS=N`` a user may place up to N times the rate (each worker keeps
its own buckets). The per-user quota in the store is the bound that holds across workers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
# Enough for every active user of one process; past it, buckets that have refilled (and so
# mean nothing) are dropped, then the oldest, so memory stays bounded whoever holds tokens.
MAX_TRACKED_KEYS = 100_000


def retry_after_seconds(wait: float) -> int:
    """``wait`` as a ``Retry-After`` value: whole seconds, at least one."""
    return max(1, math.ceil(wait))


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` events per second per key, with bursts of up to ``burst``."""

    def __init__(
        self, rate: float, burst: int, *, clock: Clock = time.monotonic, max_keys: int = MAX_TRACKED_KEYS
    ):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float:
        """Take one token for ``key``: 0.0 when allowed, else the seconds until one is free."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated=now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self._max_keys:
            return
        refill = self.burst / self.rate
        for key in [key for key, bucket in self._buckets.items() if now - bucket.updated >= refill]:
            del self._buckets[key]
        while len(self._buckets) >= self._max_keys:
            del self._buckets[next(iter(self._buckets))]
