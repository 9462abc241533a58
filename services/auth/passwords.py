"""Password hashing with argon2id, off the event loop, bounded, with equal work for unknown accounts."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared.core import ServiceUnavailable

T = TypeVar("T")


class Passwords:
    """Hashes and checks passwords. Every check costs one argon2 verification, found or not.

    Each argon2 run takes ~64 MiB and a core for ~100 ms, so at most ``max_concurrent`` run at
    once and at most ``max_waiting`` queue behind them; past that the answer is a quick 503
    instead of a login flood growing the process by gigabytes.
    """

    def __init__(
        self,
        hasher: PasswordHasher | None = None,
        *,
        max_concurrent: int | None = None,
        max_waiting: int = 32,
    ):
        self._hasher = hasher or PasswordHasher()
        # Verifying against this when the email is unknown makes both failures take the same time.
        self._dummy_hash = self._hasher.hash("not-a-real-password-but-hashed-the-same-way")
        self._slots = asyncio.Semaphore(max_concurrent or os.cpu_count() or 1)
        self._max_waiting = max_waiting
        self._waiting = 0

    async def hash(self, password: str) -> str:
        return await self._bounded(functools.partial(self._hasher.hash, password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches; ``None`` (no such user) is checked against the dummy hash."""
        return await self._bounded(functools.partial(self._verify, password_hash, password))

    async def _bounded(self, call: Callable[[], T]) -> T:
        if self._waiting >= self._max_waiting:
            raise ServiceUnavailable("too many password checks in progress", headers={"Retry-After": "1"})
        self._waiting += 1
        try:
            async with self._slots:
                return await anyio.to_thread.run_sync(call)
        finally:
            self._waiting -= 1

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            matched = self._hasher.verify(password_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        # A match against the dummy hash is still a failure: there is no such account.
        return matched and password_hash is not None
