"""A cheap argon2 cost for tests whose passwords are not what they test."""

from __future__ import annotations

from typing import Any

from argon2 import PasswordHasher

# The lowest cost argon2 accepts, about a millisecond: production's (~100 ms, 64 MiB, four lanes)
# is for attackers, and a test paying it per login spends most of a loaded core on it. A hash
# carries its parameters, so auth verifies one made here at this cost whatever its own hasher.
CHEAP_ARGON2: dict[str, Any] = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


def cheap_hasher() -> PasswordHasher:
    """A ``PasswordHasher`` at :data:`CHEAP_ARGON2`."""
    return PasswordHasher(**CHEAP_ARGON2)
