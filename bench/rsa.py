"""The machine's raw RSA-2048 rates: the physical floor that minting and verifying are judged against."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_MESSAGE = b"eyJhbGciOiJSUzI1NiJ9." + b"x" * 300  # about the size of a signing input


@dataclass(frozen=True)
class RsaRates:
    """Operations per second on one core, RS256 (PKCS#1 v1.5 with SHA-256)."""

    sign_per_second: float
    verify_per_second: float

    @property
    def verify_ms(self) -> float:
        return 1000.0 / self.verify_per_second


def measure(seconds: float = 2.0) -> RsaRates:
    """Sign and verify in a tight loop on this process's single thread."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key()
    signature = key.sign(_MESSAGE, padding.PKCS1v15(), hashes.SHA256())

    def rate(operation: Callable[[], object]) -> float:
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            for _ in range(20):
                operation()
            count += 20
        return count / elapsed

    return RsaRates(
        sign_per_second=rate(lambda: key.sign(_MESSAGE, padding.PKCS1v15(), hashes.SHA256())),
        verify_per_second=rate(
            lambda: public.verify(signature, _MESSAGE, padding.PKCS1v15(), hashes.SHA256())
        ),
    )
