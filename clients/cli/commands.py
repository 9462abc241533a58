"""The client's commands: log in, keep a fresh access token by rotating the handle, call orders, log out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from clients.cli.api import DEFAULT_GATEWAY, ApiError, GatewayApi, Unreachable, check_gateway_url
from clients.cli.state import CachedToken, Session, StateFile
from clients.cli.timing import expires_at, needs_refresh, seconds_left

ORDERS_AUDIENCE = "orders"
# The answers that mean the handle will never work again: the session is gone server-side.
_SESSION_OVER = {
    "invalid_grant": "the session has ended (it expired, was logged out or was revoked)",
    "refresh_reused": (
        "the server saw an old refresh handle of this session used again and revoked the session: "
        "a copy of the session file may have been used elsewhere"
    ),
}


class UsageError(Exception):
    """The command cannot run as asked; nothing was sent."""


class NotLoggedIn(Exception):
    """No session to use: log in first, or again."""


@dataclass
class Context:
    """What every command works with; tests build one with a fake transport and a temporary file."""

    store: StateFile
    connect: Callable[[str], GatewayApi]
    out: TextIO
    err: TextIO
    #: ``--gateway`` or its variable, when given; None means the session's own (or the default).
    gateway: str | None = None
    clock: Callable[[], float] = field(default=time.time)


def login(context: Context, email: str, password: str) -> None:
    """A new native session for ``email``; a session this file held before is logged out."""
    gateway = check_gateway_url(context.gateway or DEFAULT_GATEWAY)
    with context.store.locked():
        previous = context.store.load()
        with context.connect(gateway) as api:
            logged_in = api.login(email, password)
        context.store.save(
            Session(
                gateway=gateway,
                user_id=logged_in.user_id,
                email=logged_in.email,
                role=logged_in.role,
                refresh_handle=logged_in.refresh_handle,
            )
        )
        if previous is not None:
            _end_previous(context, previous)
    print(f"logged in as {logged_in.email} ({logged_in.role}) at {gateway}", file=context.out)
    print(f"session saved in {context.store.path}", file=context.out)


def _end_previous(context: Context, previous: Session) -> None:
    # Its handle is about to be forgotten; a session nobody can use should not linger until
    # its idle timeout. Best effort: the new session is saved whatever happens here.
    try:
        with context.connect(previous.gateway) as api:
            api.logout(previous.refresh_handle)
    except (ApiError, Unreachable) as error:
        print(f"note: the previous session of {previous.email} was not logged out: {error}", file=context.err)
    else:
        print(f"logged out the previous session of {previous.email}", file=context.err)


def access_token(
    context: Context, audience: str, refresh_before: float, *, force: bool = False
) -> tuple[CachedToken, bool]:
    """A token for ``audience`` with more than ``refresh_before`` seconds left, and whether it is new.

    The cached token when it will do; otherwise the handle is rotated under the session lock,
    so two processes never present the same handle: the second one waits, then finds the token
    the first one saved.
    """
    session = _session(context)
    cached = session.tokens.get(audience)
    if not force and cached is not None and not needs_refresh(cached, context.clock(), refresh_before):
        return cached, False
    with context.store.locked():
        session = _session(context)
        cached = session.tokens.get(audience)
        if not force and cached is not None and not needs_refresh(cached, context.clock(), refresh_before):
            return cached, False
        token = _rotate(context, session, audience)
    return token, True


def _rotate(context: Context, session: Session, audience: str) -> CachedToken:
    """Mint with the handle and save its successor; the caller holds the session lock."""
    with context.connect(session.gateway) as api:
        try:
            try:
                sent_at = context.clock()
                minted = api.mint(session.refresh_handle, audience)
            except Unreachable:
                # The answer may have been lost after auth rotated the handle. Presented again
                # within the grace period, the same handle gets the same successor, so one
                # prompt retry is safe; later, it would look like theft.
                sent_at = context.clock()
                minted = api.mint(session.refresh_handle, audience)
        except ApiError as error:
            if error.code in _SESSION_OVER:
                context.store.delete()
                raise NotLoggedIn(f"{_SESSION_OVER[error.code]}; removed {context.store.path}") from None
            raise
    token = CachedToken(minted.access_token, expires_at(sent_at, minted.expires_in))
    context.store.save(session.rotated(minted.refresh_handle, audience, token))
    return token


def print_token(context: Context, audience: str, refresh_before: float) -> None:
    token, refreshed = access_token(context, audience, refresh_before)
    if refreshed:
        _note_refresh(context, audience, token)
    print(token.access_token, file=context.out)


def refresh(context: Context, audience: str) -> None:
    """Rotate the handle now, whatever the cached token's age."""
    token, _ = access_token(context, audience, 0, force=True)
    _note_refresh(context, audience, token)


def orders(context: Context, refresh_before: float, limit: int | None) -> None:
    """``GET /api/orders`` with a fresh token; a 401 gets one new token and one retry."""
    token, refreshed = access_token(context, ORDERS_AUDIENCE, refresh_before)
    if refreshed:
        _note_refresh(context, ORDERS_AUDIENCE, token)
    gateway = _session(context).gateway
    with context.connect(gateway) as api:
        try:
            page = api.orders(token.access_token, limit=limit)
        except ApiError as error:
            if error.status != 401:
                raise
            # Refused before its time: revoked (a logout elsewhere ends only that session, a
            # password change every other one) or the clocks disagree. A new token settles it:
            # the session still mints, or the answer says it is over.
            print(f"orders refused the access token ({error.code}); refreshing once", file=context.err)
            token, _ = access_token(context, ORDERS_AUDIENCE, refresh_before, force=True)
            _note_refresh(context, ORDERS_AUDIENCE, token)
            page = api.orders(token.access_token, limit=limit)
    print(json.dumps(page, indent=2), file=context.out)


def logout(context: Context) -> None:
    """End the session at auth, then forget it. If auth cannot be reached the file stays."""
    with context.store.locked():
        session = _session(context)
        try:
            with context.connect(session.gateway) as api:
                api.logout(session.refresh_handle)
        except ApiError as error:
            if error.code not in _SESSION_OVER:
                raise
            context.store.delete()
            print(f"{_SESSION_OVER[error.code]}; removed {context.store.path}", file=context.out)
            return
        context.store.delete()
    print(f"logged out {session.email}; removed {context.store.path}", file=context.out)


def status(context: Context) -> None:
    """Who is logged in and how long the cached tokens last, from the file alone: no secret, no request."""
    session = _session(context)
    print(f"logged in as {session.email} ({session.role}, user id {session.user_id})", file=context.out)
    print(f"gateway: {session.gateway}", file=context.out)
    print(f"session file: {context.store.path}", file=context.out)
    if not session.tokens:
        print("access tokens: none yet (the next command mints one)", file=context.out)
    now = context.clock()
    for audience, token in sorted(session.tokens.items()):
        left = seconds_left(token, now)
        when = f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago"
        print(f"access token for {audience}: {when}", file=context.out)


def _session(context: Context) -> Session:
    session = context.store.load()
    if session is None:
        raise NotLoggedIn(f"not logged in (no session in {context.store.path})")
    if context.gateway is not None and check_gateway_url(context.gateway) != session.gateway:
        # The handle goes only to the gateway that issued it, never to whatever --gateway says.
        raise UsageError(
            f"the session in {context.store.path} belongs to {session.gateway}, not {context.gateway}; "
            "use another --state to log in there"
        )
    return session


def _note_refresh(context: Context, audience: str, token: CachedToken) -> None:
    left = seconds_left(token, context.clock())
    print(
        f"refreshed: rotated the refresh handle; new access token for {audience} expires in {left:.0f} s",
        file=context.err,
    )
