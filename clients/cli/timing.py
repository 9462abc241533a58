"""When to refresh: pure rules about an access token's remaining lifetime, with the clock passed in."""

from __future__ import annotations

from clients.cli.state import CachedToken

#: Refresh when the cached token has at most this many seconds left (``--refresh-before``).
DEFAULT_REFRESH_BEFORE_SECONDS = 30


def expires_at(sent_at: float, expires_in: float) -> float:
    """When a token minted by a request sent at ``sent_at`` expires.

    Counted from when the request was sent, not from when the answer arrived: the server
    started the token's lifetime somewhere in between, so this errs on the early side.
    """
    return sent_at + expires_in


def seconds_left(token: CachedToken, now: float) -> float:
    return token.expires_at - now


def needs_refresh(token: CachedToken | None, now: float, refresh_before: float) -> bool:
    """True when there is no token, or it expires within ``refresh_before`` seconds of ``now``.

    A margin of 0 still refreshes an expired token. A margin at least the token lifetime
    (``--refresh-before 300`` with 5-minute tokens) refreshes on every call.
    """
    return token is None or seconds_left(token, now) <= refresh_before
