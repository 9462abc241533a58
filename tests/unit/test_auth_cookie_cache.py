"""Auth's reading of the signed session cookie: each value's signature is checked once per process."""

from __future__ import annotations

from typing import Any, cast

from itsdangerous import Signer

from services.auth.routes import COOKIE_CACHE_SIZE, AuthContext


class CountingSigner(Signer):
    checks = 0

    def unsign(self, signed_value: str | bytes) -> bytes:
        CountingSigner.checks += 1
        return super().unsign(signed_value)


def _context() -> AuthContext:
    signer = CountingSigner("secret", salt="session-cookie")
    return AuthContext(
        settings=cast(Any, None), service=cast(Any, None), cookie_signer=signer, feed=cast(Any, None)
    )


def test_a_cookie_sent_again_is_not_checked_again_and_reads_the_same() -> None:
    context = _context()
    value = context.cookie_signer.sign("session-id").decode()
    CountingSigner.checks = 0
    assert context.session_id_of(value) == "session-id"
    assert context.session_id_of(value) == "session-id"
    assert CountingSigner.checks == 1


def test_a_tampered_cookie_is_refused_even_after_the_genuine_one_was_remembered() -> None:
    context = _context()
    value = context.cookie_signer.sign("session-id").decode()
    assert context.session_id_of(value) == "session-id"
    assert context.session_id_of(value[:-1] + ("A" if value[-1] != "A" else "B")) is None
    assert context.session_id_of("session-id.forged") is None


def test_a_flood_of_made_up_cookies_keeps_the_memory_bounded() -> None:
    context = _context()
    for number in range(COOKIE_CACHE_SIZE + 100):
        assert context.session_id_of(f"id-{number}.bad") is None
    cache_info = context.session_id_of.cache_info()  # type: ignore[attr-defined]
    assert cache_info.currsize == COOKIE_CACHE_SIZE
