"""Users, sessions, throttles and revocations in Redis; each multi-key change is one script or MULTI.

Keys: ``user:{<id>}`` (hash), ``user-email:<email>`` (id), ``session:{<user id>}:<handle>``
(hash, with a TTL that follows the session policy), ``user-sessions:{<user id>}`` (set of
handles, pruned of dead sessions whenever it is read or written), ``throttle:*`` (counters
that expire with their window) and ``revocations:{revocations}:*`` (the revocation set, see
:class:`RevocationStore`).

Every key of one user carries the hash tag ``{<user id>}``, so on Redis Cluster a user's
account, sessions, index and token budgets live in one slot: each script below touches a single
slot and nothing needs a cross-slot transaction. The login budgets share the tag ``{login}``.
The one pair in different slots, an email and its account, is written in an order that never
leaves the email pointing at nothing (see :meth:`UserStore.create`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from redis.typing import EncodableT, FieldT

from services.auth.domain import RateLimit, RefreshHandle, Session, SessionPolicy, User
from services.auth.redis_client import REDIS_ERRORS, Client, Script
from services.auth.revocations import Entry, new_epoch
from shared.core import Conflict, NotFound, ServiceUnavailable, TooManyRequests

logger = logging.getLogger(__name__)


class Refusal(enum.Enum):
    """Why a session may not be used for a request."""

    NO_SESSION = "no_session"
    CSRF = "csrf_failed"
    # A native session's refresh handle that was already rotated away (see ``_REFRESH``).
    REUSED = "refresh_reused"


@dataclasses.dataclass(frozen=True)
class Refreshed:
    """A native session's handle accepted: the session after the use and its account.

    ``sealed`` is set when the presented handle was the one rotated away just before, retried
    within the grace: the successor that rotation made, sealed under the presented secret.
    """

    session: Session
    user: User
    sealed: str | None


P = ParamSpec("P")
T = TypeVar("T")


def _unavailable_on_redis_error(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except REDIS_ERRORS as exc:
            logger.warning("redis unavailable: %s", type(exc).__name__)
            raise ServiceUnavailable("the session store is unavailable") from None

    return wrapper


def _text(value: bytes | str) -> str:
    # The client decodes responses; this only narrows redis-py's bytes-or-str annotations.
    return value.decode() if isinstance(value, bytes) else value


def _texts(fields: dict[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(key): _text(value) for key, value in fields.items()}


def _user_key(user_id: str) -> str:
    return f"user:{{{user_id}}}"


def _email_key(email: str) -> str:
    return f"user-email:{email}"


def _session_prefix(user_id: str) -> str:
    return f"session:{{{user_id}}}:"


def _session_key(user_id: str, handle: str) -> str:
    return _session_prefix(user_id) + handle


def _index_key(user_id: str) -> str:
    return f"user-sessions:{{{user_id}}}"


def _token_budget_key(user_id: str, handle: str) -> str:
    return f"throttle:token:{{{user_id}}}:{handle}"


class UserStore:
    """Accounts by id and by normalized email."""

    def __init__(self, client: Client):
        self._redis = client

    @_unavailable_on_redis_error
    async def create(self, email: str, role: str, password_hash: str) -> User:
        """Store a new account; :class:`Conflict` if the email is taken.

        The email and the account are in different Cluster slots, so no script can write both.
        The account is written first, under a fresh id nothing refers to yet; claiming the email
        (``SET NX``) then publishes it, so two concurrent creations cannot both win, and a crash
        in between leaves an unreachable record (which :meth:`all` skips), never an email that
        names no account.
        """
        user = User(id=uuid.uuid4().hex, email=email, role=role, password_hash=password_hash)
        await self._redis.hset(
            _user_key(user.id),
            mapping={"id": user.id, "email": email, "role": role, "password_hash": password_hash},
        )
        if not await self._redis.set(_email_key(email), user.id, nx=True):
            await self._redis.delete(_user_key(user.id))
            raise Conflict("an account with this email exists", code="email_taken")
        return user

    @_unavailable_on_redis_error
    async def by_email(self, email: str) -> User | None:
        user_id = await self._redis.get(_email_key(email))
        return None if user_id is None else await self.by_id(_text(user_id))

    @_unavailable_on_redis_error
    async def by_id(self, user_id: str) -> User | None:
        return _user_from_fields(_texts(await self._redis.hgetall(_user_key(user_id))))

    @_unavailable_on_redis_error
    async def all(self) -> list[User]:
        users = []
        async for key in self._redis.scan_iter(match="user:{*}", count=500):
            user = await self.by_id(_text(key).removeprefix("user:{").removesuffix("}"))
            # An account is published by its email claim; a record without one is a create that
            # lost its race or never finished.
            if user is not None and await self._redis.get(_email_key(user.email)) == user.id:
                users.append(user)
        return sorted(users, key=lambda user: user.email)

    @_unavailable_on_redis_error
    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        if not await self._redis.exists(_user_key(user_id)):
            raise NotFound("no such user")
        await self._redis.hset(_user_key(user_id), "password_hash", password_hash)

    @_unavailable_on_redis_error
    async def set_disabled(self, user_id: str, disabled: bool) -> None:
        if not await self._redis.exists(_user_key(user_id)):
            raise NotFound("no such user")
        await self._redis.hset(_user_key(user_id), "disabled", "1" if disabled else "0")


# The session lifetime rule, written once: the scripts below are where it is enforced, and
# SessionPolicy only supplies its two parameters (in ms). A session ends at the earlier of
# ``seen + idle`` (sliding) and ``created + absolute`` (fixed); a record missing a field ends now
# (a browser session has a CSRF token, a native one a refresh digest).
# Python never judges liveness itself, so there is no second copy to drift, and the tests probe
# these scripts (tests/integration/test_session_store.py) rather than a Python twin.
_LIFETIME = """
local function ends_at(session, idle, absolute)
    local created, seen = tonumber(session.created), tonumber(session.seen)
    if not created or not seen or not (session.csrf or session.rt) then return nil end
    return math.min(seen + idle, created + absolute)
end
local function record(flat)
    local fields = {}
    for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
    return fields
end
"""

# What the two scripts that use a session share. KEYS: the session, its user, the user's index,
# the session's token budget. ARGV: now (ms), idle and absolute timeouts (ms), the session's handle.
_SESSION_USE = (
    _LIFETIME
    + """
local now, idle, absolute = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

-- The session's record (as stored and read), its user and its end, when the session may be used
-- now; else nil, and a dead session leaves Redis and the index. A native session is held by its
-- refresh handle alone and a browser's by its cookie alone: ``native`` says which the caller holds.
local function usable(native)
    local flat = redis.call('HGETALL', KEYS[1])
    if #flat == 0 then return nil end
    local session = record(flat)
    if (session.rt ~= nil) ~= native then return nil end
    local user = redis.call('HGETALL', KEYS[2])
    local expires = ends_at(session, idle, absolute)
    if not expires or #user == 0 or record(user).disabled == '1' or now >= expires then
        redis.call('DEL', KEYS[1])
        redis.call('SREM', KEYS[3], ARGV[4])
        return nil
    end
    return flat, session, user, expires
end

-- Spends one request of the session's token budget; the wait (ms) when it is spent out, else nil.
local function over_budget(limit, window)
    local count = redis.call('INCR', KEYS[4])
    if count == 1 then redis.call('EXPIRE', KEYS[4], window) end
    if count > tonumber(limit) then return math.max(redis.call('PTTL', KEYS[4]), 1) end
    return nil
end

-- Slides the idle timer; the session's new end (ms).
local function touched(session)
    redis.call('HSET', KEYS[1], 'seen', ARGV[1])
    session.seen = ARGV[1]
    local expires = ends_at(session, idle, absolute)
    redis.call('PEXPIRE', KEYS[1], expires - now)
    return expires
end
"""
)

# KEYS and the first ARGV as ``_SESSION_USE``, the token budget only when one is spent; then "1"
# to require that ARGV[6] is the session's CSRF token (else "0"), then the budget's limit and
# window (s).
# Every session-authenticated request is this one round trip: the session is judged, and
# touched only if it may be used, in one step, so a logout racing a token request either
# wins or comes after the token. The reply carries the new end of the session (ms). The CSRF
# tokens are compared as SHA-1 digests, so the time a comparison takes says nothing about the
# stored token.
_USE = (
    _SESSION_USE
    + """
local flat, session, user = usable(false)
if not flat then return {'gone'} end
if ARGV[5] == '1' and redis.sha1hex(session.csrf) ~= redis.sha1hex(ARGV[6]) then return {'csrf'} end
if KEYS[4] then
    local wait = over_budget(ARGV[7], ARGV[8])
    if wait then return {'busy', wait} end
end
return {'ok', flat, user, touched(session)}
"""
)

# KEYS and the first ARGV as ``_SESSION_USE``; then the presented secret's digest, "1" to rotate (a
# mint) or "0" only to check (a logout), the successor's digest, the successor sealed under the
# presented secret, the grace (ms), then the budget's limit and window (s).
# A native session's handle is judged and rotated in one step, so two refreshes with one handle
# cannot both rotate. The presented secret must be the current one; else the one rotated away
# last, within the grace and before its successor was used (a retry of a lost response, answered
# with the same successor); anything else proves a handle was used twice: 'reused'. Digests are
# compared, not secrets, so a comparison's time says nothing about a stored secret.
_REFRESH = (
    _SESSION_USE
    + """
local flat, session, user, expires = usable(true)
if not flat then return {'gone'} end
local retry = false
if session.rt ~= ARGV[5] then
    retry = session.prev == ARGV[5] and now - tonumber(session.rot) < tonumber(ARGV[9])
    if not retry then return {'reused'} end
end
if ARGV[6] == '0' then return {'ok', flat, user, expires, ''} end
local wait = over_budget(ARGV[10], ARGV[11])
if wait then return {'busy', wait} end
local sealed = ''
if retry then
    sealed = session.next
else
    redis.call('HSET', KEYS[1], 'rt', ARGV[7], 'prev', ARGV[5], 'rot', ARGV[1], 'next', ARGV[8])
end
return {'ok', flat, user, touched(session), sealed}
"""
)

# The scripts below reach a user's sessions by names built from a prefix (ARGV) and the handles
# in the index. Those keys are not declared, which Redis Cluster tolerates because they share
# the index's hash slot; the Cluster integration tests hold this to account.

# KEYS: index. ARGV: the user's session key prefix.
_REVOKE_ALL = """
local revoked = 0
for _, handle in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    revoked = revoked + redis.call('DEL', ARGV[1] .. handle)
end
redis.call('DEL', KEYS[1])
return revoked
"""

# KEYS: session, index. ARGV: now, idle and absolute timeouts (ms), handle, index TTL (s), the
# user's session key prefix, "1" to revoke every other session of the user first, the most
# sessions a user may hold, then the session's field/value pairs. Past the most, the least
# recently used sessions end to make room. The reply lists the handles ended, for their
# revocation entries.
_CREATE = (
    _LIFETIME
    + """
local revoked, live = {}, {}
for _, handle in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local seen = redis.call('HGET', ARGV[6] .. handle, 'seen')
    if ARGV[7] == '1' then
        revoked[#revoked + 1] = handle
        redis.call('DEL', ARGV[6] .. handle)
        redis.call('SREM', KEYS[2], handle)
    elseif not seen then
        redis.call('SREM', KEYS[2], handle)
    else
        live[#live + 1] = {tonumber(seen) or 0, handle}
    end
end
local room = tonumber(ARGV[8]) - 1
if #live > room then
    table.sort(live, function(a, b) return a[1] < b[1] end)
    for i = 1, #live - room do
        revoked[#revoked + 1] = live[i][2]
        redis.call('DEL', ARGV[6] .. live[i][2])
        redis.call('SREM', KEYS[2], live[i][2])
    end
end
local fields = {unpack(ARGV, 9)}
redis.call('HSET', KEYS[1], unpack(fields))
local expires = ends_at(record(fields), tonumber(ARGV[2]), tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], expires - tonumber(ARGV[1]))
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5], 'GT')
redis.call('EXPIRE', KEYS[2], ARGV[5], 'NX')
return revoked
"""
)

# KEYS: index. ARGV: the user's session key prefix, now, idle and absolute timeouts (ms).
# A session past its end is deleted here, even if Redis has not expired the key yet.
_INDEXED = (
    _LIFETIME
    + """
local found = {}
local now, idle, absolute = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for _, handle in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local fields = redis.call('HGETALL', ARGV[1] .. handle)
    local expires = #fields > 0 and ends_at(record(fields), idle, absolute)
    if not expires or now >= expires then
        redis.call('DEL', ARGV[1] .. handle)
        redis.call('SREM', KEYS[1], handle)
    else
        table.insert(found, handle)
        table.insert(found, fields)
    end
end
return found
"""
)


# How ``_SESSION_USE``'s scripts name a refusal other than 'gone'.
_REFUSALS = {"csrf": Refusal.CSRF, "reused": Refusal.REUSED}


def _used(user_id: str, handle: str, reply: list[Any], now: float) -> tuple[Session, User] | Refusal:
    """A session-use script's reply: the session after the use and its account, or the refusal."""
    outcome = _text(reply[0])
    if outcome == "busy":
        raise TooManyRequests(
            "too many token requests for this session", retry_after=-(-int(reply[1]) // 1000)
        )
    if outcome in _REFUSALS:
        return _REFUSALS[outcome]
    session = _session_from_fields(user_id, handle, _pairs(reply[1])) if outcome == "ok" else None
    user = _user_from_fields(_pairs(reply[2])) if outcome == "ok" else None
    if session is None or user is None:
        return Refusal.NO_SESSION
    return dataclasses.replace(session, last_seen=now, expires_at=int(reply[3]) / 1000), user


class SessionStore:
    """Server-side sessions with a per-user index, both kept consistent transactionally.

    A session is addressed by its owner's user id and its handle: both come from the cookie.
    """

    def __init__(self, client: Client, policy: SessionPolicy):
        self._redis = client
        self.policy = policy
        self._create = client.register_script(_CREATE)
        self._indexed = client.register_script(_INDEXED)
        self._revoke_all = client.register_script(_REVOKE_ALL)
        # The one script of every session-authenticated request, run by the lean one-command path.
        self._use = Script(client, _USE)
        self._refresh = Script(client, _REFRESH)

    @_unavailable_on_redis_error
    async def create(
        self,
        session: Session,
        now: float,
        *,
        revoke_others: bool = False,
        refresh_digest: str | None = None,
    ) -> list[str]:
        """Store a session and index it; with ``revoke_others``, every other session of the user dies.

        A native session is stored with its first ``refresh_digest`` and no CSRF token. A user
        already holding ``policy.per_user`` sessions loses the least recently used to make room.

        One script, so the index never names a session that is gone for good, and a password
        change cannot leave behind a session created while it ran. Entries for sessions that
        expired are pruned here too. Returns the handles ended here, by ``revoke_others`` or to
        make room (each needs a revocation entry, including one created while a change ran).
        """
        fields = [part for pair in _session_fields(session, refresh_digest).items() for part in pair]
        revoked = await self._create(
            keys=[_session_key(session.user_id, session.handle), _index_key(session.user_id)],
            args=[
                _ms(now),
                *self._timeouts(),
                session.handle,
                self.policy.absolute,
                _session_prefix(session.user_id),
                "1" if revoke_others else "0",
                self.policy.per_user,
                *fields,
            ],
        )
        return [_text(handle) for handle in revoked]

    @_unavailable_on_redis_error
    async def live_for_user(self, user_id: str, now: float) -> list[Session]:
        """The user's live sessions; index entries of expired or dead sessions are removed."""
        found = await self._indexed(
            keys=[_index_key(user_id)], args=[_session_prefix(user_id), _ms(now), *self._timeouts()]
        )
        live = []
        for handle, raw in zip(found[::2], found[1::2], strict=True):
            session = _session_from_fields(user_id, _text(handle), _pairs(raw))
            if session is not None:
                live.append(session)
            else:
                await self.delete(user_id, _text(handle))
        return live

    @_unavailable_on_redis_error
    async def use(
        self,
        user_id: str,
        handle: str,
        now: float,
        *,
        csrf: str | None = None,
        token_budget: RateLimit | None = None,
    ) -> tuple[Session, User] | Refusal:
        """Use the session for one request: the session after the use and its account, or a refusal.

        The session's lifetime is judged here, by the script (see ``_LIFETIME``); the session
        returned carries the end the script computed (``expires_at``).

        Refused when the session is gone or past a timeout, or its account is gone or disabled
        (the session is then deleted), or, when ``csrf`` is given (the token the request
        presented, empty if none), when it is not the session's. With ``token_budget``, one
        token request is spent from the session's budget; over budget, :class:`TooManyRequests`
        and the session is left as it was. Only a use that is allowed slides the idle timer.
        """
        keys = [_session_key(user_id, handle), _user_key(user_id), _index_key(user_id)]
        args: list[str | int] = [
            _ms(now),
            *self._timeouts(),
            handle,
            "0" if csrf is None else "1",
            csrf or "",
        ]
        if token_budget is not None:
            keys.append(_token_budget_key(user_id, handle))
            args += [token_budget.limit, token_budget.window]
        return _used(user_id, handle, await self._use(keys, args), now)

    @_unavailable_on_redis_error
    async def refresh(
        self,
        handle: RefreshHandle,
        now: float,
        *,
        rotate_to: tuple[str, str] | None,
        grace: float,
        token_budget: RateLimit,
    ) -> Refreshed | Refusal:
        """Use a native session through its refresh handle (see ``_REFRESH``).

        With ``rotate_to`` (the successor's digest and the successor sealed under the presented
        secret) the handle is rotated and one token request spent (:class:`TooManyRequests`
        when over budget, nothing rotated); without, it is only checked (a logout). Refused
        with :attr:`Refusal.NO_SESSION` when the session is gone, past a timeout or not native,
        or its account is gone or disabled; :attr:`Refusal.REUSED` when the secret was already
        rotated away. Only an accepted use slides the idle timer.
        """
        ref = handle.session
        digest, sealed = rotate_to or ("", "")
        reply = await self._refresh(
            [
                _session_key(ref.user_id, ref.handle),
                _user_key(ref.user_id),
                _index_key(ref.user_id),
                _token_budget_key(ref.user_id, ref.handle),
            ],
            [
                _ms(now),
                *self._timeouts(),
                ref.handle,
                handle.digest,
                "0" if rotate_to is None else "1",
                digest,
                sealed,
                _ms(grace),
                token_budget.limit,
                token_budget.window,
            ],
        )
        used = _used(ref.user_id, ref.handle, reply, now)
        if isinstance(used, Refusal):
            return used
        return Refreshed(*used, sealed=_text(reply[4]) or None)

    def _timeouts(self) -> tuple[int, int]:
        # The lifetime rule's parameters, in the scripts' unit (ms); the rule is _LIFETIME.
        return self.policy.idle * 1000, self.policy.absolute * 1000

    @_unavailable_on_redis_error
    async def delete(self, user_id: str, handle: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_session_key(user_id, handle))
            pipe.srem(_index_key(user_id), handle)
            await pipe.execute()

    @_unavailable_on_redis_error
    async def delete_all_for_user(self, user_id: str) -> int:
        """Revoke every session of a user (password change, logout everywhere); the count revoked."""
        # One script, so a session created concurrently cannot slip between read and delete.
        revoked = await self._revoke_all(keys=[_index_key(user_id)], args=[_session_prefix(user_id)])
        return int(revoked)

    @_unavailable_on_redis_error
    async def ping(self) -> bool:
        return bool(await self._redis.ping())


# KEYS: the budgets' counters. ARGV: limit and window of each, in the same order. The budgets of
# domain.LoginThrottlePolicy: per IP, per account at that IP, per account (see its docstring).
_RESERVE_LOGIN = """
local counts, waits = {}, {}
for i = 1, 3 do
    counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
    waits[i] = math.max(redis.call('PTTL', KEYS[i]), 1)
end
local wait = 0
if counts[1] >= tonumber(ARGV[1]) then wait = math.max(wait, waits[1]) end
if counts[2] >= tonumber(ARGV[3]) then wait = math.max(wait, waits[2]) end
if counts[3] >= tonumber(ARGV[5]) and counts[2] > 0 then
    wait = math.max(wait, math.min(waits[2], waits[3]))
end
if wait > 0 then return wait end
for i = 1, 3 do
    if redis.call('INCR', KEYS[i]) == 1 then
        redis.call('EXPIRE', KEYS[i], ARGV[2 * i])
    end
end
return 0
"""

# KEYS: one budget's counter. ARGV: its limit. The wait (ms) before it has room, 0 when it has.
_FAILURE_WAIT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
    return math.max(redis.call('PTTL', KEYS[1]), 1)
end
return 0
"""

# KEYS: one budget's counter. ARGV: its window (s).
_COUNT_FAILURE = """
if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 0
"""

_REFUND = """
for i = 1, #KEYS do
    if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
"""


class ThrottleStore:
    """Fixed-window counters, each checked and spent in one script and gone with its window."""

    def __init__(self, client: Client):
        self._reserve_login = client.register_script(_RESERVE_LOGIN)
        self._failure_wait = client.register_script(_FAILURE_WAIT)
        self._count_failure = client.register_script(_COUNT_FAILURE)
        self._refund = client.register_script(_REFUND)

    @_unavailable_on_redis_error
    async def reserve_login(self, keys: tuple[str, str, str], limits: tuple[RateLimit, ...]) -> int:
        """Spend one failure from each budget in advance; else the seconds until a retry can pass.

        Spending before the password check (and refunding a success) keeps parallel guesses
        from all passing a check that only counts the ones already finished.
        """
        args = [value for limit in limits for value in (limit.limit, limit.window)]
        wait_ms = int(await self._reserve_login(keys=list(keys), args=args))
        return -(-wait_ms // 1000)

    @_unavailable_on_redis_error
    async def failure_wait(self, key: str, limit: RateLimit) -> int:
        """The seconds until the failure budget ``key`` has room again; 0 when it has room now.

        Unlike the login budgets nothing is spent in advance: parallel failures can overshoot
        the budget by the number in flight, which against a 256-bit secret buys nothing, while
        a success costs no write and a crowd of honest clients behind one address is never
        refused for each other's refreshes.
        """
        wait_ms = int(await self._failure_wait(keys=[key], args=[limit.limit]))
        return -(-wait_ms // 1000)

    @_unavailable_on_redis_error
    async def count_failure(self, key: str, limit: RateLimit) -> None:
        await self._count_failure(keys=[key], args=[limit.window])

    @_unavailable_on_redis_error
    async def refund(self, keys: tuple[str, ...]) -> None:
        await self._refund(keys=list(keys), args=[])


# A session is stored as a small hash of short fields, times in integer milliseconds: with every
# value under 64 bytes Redis keeps it as a listpack and stores integers in a few bytes, which
# is what holds a session (record plus index entry) under 400 bytes at 100,000 sessions. The
# owner is not a field: the key names it.
_CREATED, _SEEN, _CSRF, _AGENT, _IP = "created", "seen", "csrf", "ua", "ip"
# A native session's current refresh digest: present on native sessions only, it is their mark.
_REFRESH_DIGEST = "rt"


def _ms(seconds: float) -> str:
    # Rounded down: a stored time may only ever make a session end sooner, never later.
    return str(math.floor(seconds * 1000))


def _pairs(flat: list[bytes | str]) -> dict[str, str]:
    # A script returns a hash as a flat list of alternating fields and values.
    texts = [_text(part) for part in flat]
    return dict(zip(texts[::2], texts[1::2], strict=True))


def _session_fields(session: Session, refresh_digest: str | None) -> dict[FieldT, EncodableT]:
    fields: dict[FieldT, EncodableT] = {
        _CREATED: _ms(session.created_at),
        _SEEN: _ms(session.last_seen),
        _AGENT: session.user_agent,
        _IP: session.ip,
    }
    if refresh_digest is None:
        fields[_CSRF] = session.csrf_token
    else:
        fields[_REFRESH_DIGEST] = refresh_digest
    return fields


def _session_from_fields(user_id: str, handle: str, fields: dict[str, str]) -> Session | None:
    try:
        return Session(
            handle=handle,
            user_id=user_id,
            created_at=int(fields[_CREATED]) / 1000,
            last_seen=int(fields[_SEEN]) / 1000,
            csrf_token=fields.get(_CSRF, ""),
            user_agent=fields.get(_AGENT, ""),
            ip=fields.get(_IP, ""),
            native=_REFRESH_DIGEST in fields,
        )
    except (KeyError, ValueError):
        logger.warning("discarding a malformed session record")
        return None


def _user_from_fields(fields: dict[str, str]) -> User | None:
    if not fields:
        return None
    return User(
        id=fields["id"],
        email=fields["email"],
        role=fields["role"],
        password_hash=fields["password_hash"],
        disabled=fields.get("disabled") == "1",
    )


# The revocation set (services/auth/revocations.py) shares one hash tag, so each script below
# touches one Cluster slot: ``revocations:{revocations}:meta`` (hash: ``epoch``, ``version``) and
# ``revocations:{revocations}:entries`` (sorted set: an entry's stored form scored by its
# ``until``). Expired entries are pruned by score on every write and read, so the set never
# holds more than the revocations of the last token lifetime.
_REVOCATION_META = "revocations:{revocations}:meta"
_REVOCATION_ENTRIES = "revocations:{revocations}:entries"

# Creates the set's identity when either field is missing: a version without its epoch (or the
# reverse) would let a verifier take a restarted count for a replay, or a replay for news.
_REVOCATION_EPOCH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local version = redis.call('HGET', KEYS[1], 'version')
if not epoch or not version then
    epoch, version = ARGV[2], '0'
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'version', version)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
"""

# KEYS: meta, entries. ARGV: now (s), an epoch for a set created here, then member/until pairs.
# One step: the entries, the pruning and the version a verifier sees move together.
_RECORD_REVOCATIONS = (
    _REVOCATION_EPOCH
    + """
for i = 3, #ARGV, 2 do redis.call('ZADD', KEYS[2], 'GT', ARGV[i + 1], ARGV[i]) end
return {epoch, redis.call('HINCRBY', KEYS[1], 'version', 1)}
"""
)

# KEYS: meta, entries. ARGV: now (s), an epoch for a set created here.
_READ_REVOCATIONS = (
    _REVOCATION_EPOCH
    + """
local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
return {epoch, tonumber(redis.call('HGET', KEYS[1], 'version')), entries}
"""
)


@dataclasses.dataclass(frozen=True)
class RevocationSet:
    """The set as Redis holds it: its identity, its version and its live entries."""

    epoch: str
    version: int
    entries: tuple[Entry, ...]


class RevocationStore:
    """The revocation set in Redis: recorded by the critical operations, read by the feed."""

    def __init__(self, client: Client):
        self._redis = client
        self._record = client.register_script(_RECORD_REVOCATIONS)
        self._read = client.register_script(_READ_REVOCATIONS)
        # The entries of the last read by their stored form: a new version is parsed only where new.
        self._parsed: dict[tuple[bytes | str, bytes | str], Entry] = {}

    @_unavailable_on_redis_error
    async def record(self, entries: Sequence[Entry], now: float) -> tuple[str, int]:
        """Add ``entries`` and bump the version; the set's (epoch, version) after it."""
        args: list[EncodableT] = [math.floor(now), new_epoch()]
        for entry in entries:
            args += [entry.as_member(), entry.until]
        epoch, version = await self._record(keys=[_REVOCATION_META, _REVOCATION_ENTRIES], args=args)
        return _text(epoch), int(version)

    @_unavailable_on_redis_error
    async def read(self, now: float) -> RevocationSet:
        """The live set (created empty, with a new epoch, when Redis has none)."""
        epoch, version, flat = await self._read(
            keys=[_REVOCATION_META, _REVOCATION_ENTRIES], args=[math.floor(now), new_epoch()]
        )
        parsed = {}
        for stored in zip(flat[::2], flat[1::2], strict=True):
            entry = self._parsed.get(stored) or Entry.from_member(_text(stored[0]), float(stored[1]))
            if entry is not None:
                parsed[stored] = entry
        self._parsed = parsed
        return RevocationSet(_text(epoch), int(version), tuple(parsed.values()))

    @_unavailable_on_redis_error
    async def probe(self) -> tuple[str, int] | None:
        """The set's (epoch, version) in one cheap round trip; None when Redis has no set."""
        epoch, version = await self._redis.hmget(_REVOCATION_META, ["epoch", "version"])
        if epoch is None or version is None:
            return None
        return _text(epoch), int(version)
