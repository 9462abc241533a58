"""When the command-line client refreshes: by the token's time left, with the clock passed in."""

from __future__ import annotations

import pytest

from clients.cli.state import CachedToken
from clients.cli.timing import DEFAULT_REFRESH_BEFORE_SECONDS, expires_at, needs_refresh, seconds_left

NOW = 1_700_000_000.0


def token_with(seconds: float) -> CachedToken:
    return CachedToken("token", NOW + seconds)


def test_expiry_counts_from_when_the_request_was_sent_not_answered() -> None:
    assert expires_at(sent_at=NOW, expires_in=300) == NOW + 300


def test_no_token_needs_one() -> None:
    assert needs_refresh(None, NOW, DEFAULT_REFRESH_BEFORE_SECONDS)


@pytest.mark.parametrize(
    ("left", "refresh_before", "refresh"),
    [
        (31, 30, False),
        (30, 30, True),
        (29.5, 30, True),
        (1, 0, False),
        (0, 0, True),
        (-5, 0, True),
        # A margin as long as the token's lifetime: every call refreshes.
        (300, 300, True),
        (299, 300, True),
    ],
)
def test_a_token_is_refreshed_once_it_expires_within_the_margin(
    left: float, refresh_before: float, refresh: bool
) -> None:
    assert needs_refresh(token_with(left), NOW, refresh_before) is refresh


def test_seconds_left_is_negative_once_expired() -> None:
    assert seconds_left(token_with(-12), NOW) == -12
    assert DEFAULT_REFRESH_BEFORE_SECONDS == 30
