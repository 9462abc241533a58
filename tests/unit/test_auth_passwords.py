"""Password checks: equal work for unknown accounts, and a hard bound on concurrent argon2 runs."""

from __future__ import annotations

import asyncio
import threading

import pytest
from argon2 import PasswordHasher

from services.auth.passwords import Passwords
from shared.core import ServiceUnavailable

# Cheap parameters: these tests are about scheduling, not about the hash's strength.
CHEAP = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


class CountingHasher(PasswordHasher):
    """Records how many verifications run at the same moment."""

    def __init__(self) -> None:
        super().__init__(**CHEAP)
        self.running = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()
        self.release = threading.Event()
        self.two_running = threading.Event()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
            if self.running >= 2:
                self.two_running.set()
        try:
            self.release.wait(timeout=10)
            return super().verify(hash, password)
        finally:
            with self._lock:
                self.running -= 1


async def test_right_password_matches_and_wrong_or_unknown_do_not() -> None:
    passwords = Passwords(PasswordHasher(**CHEAP))
    stored = await passwords.hash("a long enough password")
    assert await passwords.verify(stored, "a long enough password")
    assert not await passwords.verify(stored, "another password")
    assert not await passwords.verify(None, "a long enough password")
    assert not await passwords.verify("not-an-argon2-hash", "x")


async def test_unknown_account_still_costs_one_argon2_verification() -> None:
    hasher = CountingHasher()
    hasher.release.set()
    passwords = Passwords(hasher)
    assert not await passwords.verify(None, "whatever")
    assert hasher.calls == 1


async def test_concurrent_checks_are_bounded_and_the_overflow_is_refused_fast() -> None:
    hasher = CountingHasher()
    passwords = Passwords(hasher, max_concurrent=2, max_waiting=4)
    stored = PasswordHasher(**CHEAP).hash("pw")

    checks = [asyncio.create_task(passwords.verify(stored, "pw")) for _ in range(4)]
    assert await asyncio.to_thread(hasher.two_running.wait, 5)
    with pytest.raises(ServiceUnavailable) as refused:
        await passwords.verify(stored, "pw")
    assert refused.value.headers["Retry-After"] == "1"

    hasher.release.set()
    assert await asyncio.gather(*checks) == [True] * 4
    assert hasher.most == 2
