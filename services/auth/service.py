"""Auth's use cases, each written once and called by the HTTP routes and the command line alike.

:class:`Accounts` holds what every use case works on (the stores, password hashing and the
clock) and the use cases an operator can run without the web server (change a password,
disable or enable an account, revoke sessions). Every use case that ends sessions also records
a revocation cutoff (see ``revocations``), so tokens already minted from them stop working too.
:class:`AuthService` adds what only the
server has (settings and signing keys) for the session use cases: log in, use a session, mint,
log out. Rules come from ``domain``, I/O from ``store``; HTTP lives in ``routes``.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, overload

from services.auth import domain, revocations
from services.auth.domain import RateLimit, RefreshHandle, Session, SessionRef, User
from services.auth.key_schedule import (
    KeyState,
    RotationPolicy,
    Schedule,
    ScheduleError,
    next_kid,
    rotation_due,
)
from services.auth.key_store import KeyStore, read_schedule, retire_key, rotate_keys
from services.auth.passwords import Passwords
from services.auth.revocations import Entry, Kind
from services.auth.settings import Settings
from services.auth.store import (
    Refreshed,
    Refusal,
    RevocationStore,
    SessionStore,
    ThrottleStore,
    UserStore,
)
from shared.core import ApiError, Forbidden, NotFound, TooManyRequests, Unauthorized

logger = logging.getLogger(__name__)


class AdminAction(enum.Enum):
    """What an administrator can do to an account besides listing it."""

    REVOKE_SESSIONS = "revoke-sessions"
    DISABLE = "disable"
    ENABLE = "enable"


T = TypeVar("T")


class Recorder(Protocol):
    """Where revocation entries go: the server's feed (which republishes at once) or the store."""

    async def record(self, entries: Sequence[Entry]) -> None: ...


@dataclass(frozen=True)
class StoredRevocations:
    """A :class:`Recorder` straight to Redis, for the command line (the servers poll the set)."""

    store: RevocationStore
    clock: Callable[[], float] = time.time

    async def record(self, entries: Sequence[Entry]) -> None:
        if entries:
            await self.store.record(entries, self.clock())


@dataclass(frozen=True)
class NewSession:
    """A session just created: its secret id (for the cookie, never stored) and the record."""

    session_id: str
    session: Session


@dataclass(frozen=True)
class NativeSession:
    """What a native client is given: the refresh handle to present next (a secret) and its account."""

    refresh_handle: str
    user: User


@dataclass(frozen=True)
class Minted:
    """A token minted through a refresh handle, and the handle to present next time."""

    access_token: str
    refresh_handle: str


@dataclass(frozen=True)
class Accounts:
    """The stores with the clock, and the account use cases that need nothing else."""

    users: UserStore
    sessions: SessionStore
    throttles: ThrottleStore
    passwords: Passwords
    revocations: Recorder
    # The access token lifetime: a revocation entry lives as long as a token it covers might.
    token_ttl: int
    clock: Callable[[], float] = time.time

    async def user_by_email(self, email: str) -> User:
        """The account with this email (normalized), or :class:`NotFound`."""
        user = await self.users.by_email(domain.normalize_email(email))
        if user is None:
            raise NotFound(f"no user {email}")
        return user

    async def user_by_id(self, user_id: str) -> User:
        user = await self.users.by_id(user_id)
        if user is None:
            raise NotFound("no such user")
        return user

    async def create_user(self, email: str, role: str, password: str) -> User:
        email = domain.validate_new_account(email, role, password)
        return await self.users.create(email, role, await self.passwords.hash(password))

    @overload
    async def change_password(self, user: User, new_password: str, *, renew: Session) -> NewSession: ...

    @overload
    async def change_password(self, user: User, new_password: str, *, renew: None) -> int: ...

    async def change_password(
        self, user: User, new_password: str, *, renew: Session | None
    ) -> NewSession | int:
        """Store ``new_password`` and end every session of ``user``: the one password change.

        ``renew`` is the difference between the callers. The web passes the caller's own session:
        that login continues under a new id and CSRF token (its old id dies with the others, in
        one script), and the :class:`NewSession` is returned. The command line passes None: an
        operator resetting a password ends every session, and the count revoked is returned.
        """
        domain.validate_new_password(new_password)
        await self.users.set_password_hash(user.id, await self.passwords.hash(new_password))
        if renew is None:
            return await self.revoke_sessions(user)
        now = self.clock()
        # Recorded before the sessions end, so a failure here leaves them alive for a retry; then
        # again for any session the script ended that the listing missed (a login racing this).
        others = {
            session.public_handle
            for session in await self.sessions.live_for_user(user.id, now)
            if session.handle != renew.handle
        }
        await self._record(Kind.SESSION, others, now)
        session_id = domain.new_session_id(user.id)
        renewed = domain.renewed_session(renew, session_id, now)
        ended = await self.sessions.create(renewed, now, revoke_others=True)
        ended_sids = {domain.public_handle(handle) for handle in ended} - {renew.public_handle}
        finished = self.clock()
        late = ended_sids if revocations.cutoff(finished) != revocations.cutoff(now) else ended_sids - others
        await self._record(Kind.SESSION, late, finished)
        return NewSession(session_id, renewed)

    async def set_disabled(self, user: User, disabled: bool) -> int:
        """Disable (refuse logins, revoke every session) or enable an account; the count revoked."""
        # Disabled first: a login racing this finds the flag, and a session it made dies below.
        await self.users.set_disabled(user.id, disabled)
        return await self.revoke_sessions(user) if disabled else 0

    async def revoke_sessions(self, user: User) -> int:
        """Log ``user`` out everywhere, tokens already minted included; the count of sessions revoked."""
        return await self.revoking(Kind.USER, {user.id}, lambda: self.sessions.delete_all_for_user(user.id))

    async def revoking(self, kind: Kind, ids: Collection[str], end: Callable[[], Awaitable[T]]) -> T:
        """Record cutoffs for ``ids``, then ``end`` the sessions; ``end``'s result.

        The set and a user's sessions live in different Cluster slots, so no one script can do
        both. Recording first means a failure leaves the sessions alive and the caller's retry
        finds them; a session cannot mint a token that escapes the cutoff unless ending it took
        into a later second, and then the cutoff is recorded again from after the end.
        """
        started = self.clock()
        await self._record(kind, ids, started)
        outcome = await end()
        finished = self.clock()
        if revocations.cutoff(finished) != revocations.cutoff(started):
            await self._record(kind, ids, finished)
        return outcome

    async def sessions_ended(self, handles: Collection[str]) -> None:
        """Revoke the tokens of sessions a store script ended by itself (to make room for a new one).

        Recorded after the end, which the script did in one step with the creation: nothing can
        mint from them any more, and the cutoff is after every token they minted.
        """
        await self._record(Kind.SESSION, {domain.public_handle(handle) for handle in handles}, self.clock())

    async def _record(self, kind: Kind, ids: Collection[str], now: float) -> None:
        if ids:
            await self.revocations.record(
                revocations.revoke(kind, sorted(ids), now, token_ttl=self.token_ttl)
            )


@dataclass(frozen=True)
class AuthService:
    """The session use cases of the running server."""

    accounts: Accounts
    settings: Settings
    keys: KeyStore
    # Called once per rotated-away refresh handle presented again (the metric counts thefts).
    on_refresh_reuse: Callable[[], None] = lambda: None

    async def use_session(
        self, ref: SessionRef | None, *, csrf: str | None, token_budget: RateLimit | None = None
    ) -> tuple[Session, User]:
        """The session after this use and its user: 401 without a live one, 403 on a CSRF miss.

        With ``csrf`` (the X-CSRF-Token presented, empty if none) it must be the session's. The
        idle timer slides only on a use that is allowed; ``token_budget`` spends one token
        request (429 when over).
        """
        if ref is None:
            raise Unauthorized("no valid session", code="no_session")
        used = await self.accounts.sessions.use(
            ref.user_id, ref.handle, self.accounts.clock(), csrf=csrf, token_budget=token_budget
        )
        if used is Refusal.CSRF:
            raise Forbidden("missing or wrong X-CSRF-Token", code="csrf_failed")
        if isinstance(used, Refusal):
            raise Unauthorized("no valid session", code="no_session")
        return used

    async def login(
        self, email: str, password: str, *, presented: Sequence[SessionRef], ip: str, user_agent: str
    ) -> tuple[NewSession, User]:
        """Check the credentials under the login budgets and open a new session.

        Every session the caller presented ends (fixation: an id from before login is never
        reused). An unknown email, a wrong password and a disabled account fail alike.
        """
        user = await self._authenticate(email, password, ip)
        accounts = self.accounts
        for previous in presented:
            await accounts.sessions.delete(previous.user_id, previous.handle)
        now = accounts.clock()
        session_id = domain.new_session_id(user.id)
        session = domain.new_session(session_id, user, now, user_agent=user_agent, ip=ip)
        await accounts.sessions_ended(await accounts.sessions.create(session, now))
        return NewSession(session_id, session), user

    async def native_login(self, email: str, password: str, *, ip: str, user_agent: str) -> NativeSession:
        """Check the credentials as :meth:`login` does and open a native session: its first handle.

        The session is the same record a browser's is (timeouts, listing, revocation); its id is
        handed out only inside the refresh handle, and no cookie can name it.
        """
        user = await self._authenticate(email, password, ip)
        now = self.accounts.clock()
        session_id = domain.new_session_id(user.id)
        secret = domain.new_refresh_secret()
        session = domain.new_native_session(session_id, user, now, user_agent=user_agent, ip=ip)
        ended = await self.accounts.sessions.create(
            session, now, refresh_digest=domain.refresh_digest(secret)
        )
        await self.accounts.sessions_ended(ended)
        return NativeSession(domain.refresh_handle(session_id, secret), user)

    async def _authenticate(self, email: str, password: str, ip: str) -> User:
        """The account these credentials open, under the login budgets; 401 or 429 otherwise."""
        accounts = self.accounts
        # Counted by the email as typed (normalized), whether or not an account has it.
        throttle_keys = await self._reserve_login_attempt(email, ip)
        try:
            user = await accounts.users.by_email(email)
            # Always one argon2 verification, so an unknown email costs what a wrong password costs.
            valid = await accounts.passwords.verify(user.password_hash if user else None, password)
        except ApiError:
            # A 503 (Redis away, argon2 queue full) is no failed guess.
            await accounts.throttles.refund(throttle_keys)
            raise
        # A disabled account fails exactly like a wrong password, budget included.
        if user is None or not valid or user.disabled:
            raise Unauthorized("email or password is wrong", code="invalid_credentials")
        await accounts.throttles.refund(throttle_keys)
        return user

    async def mint(self, ref: SessionRef | None, *, csrf: str, audience: str) -> str:
        """An access token for ``audience`` from a live session, spending its token budget.

        Nothing awaits between the session's check and signing, so a logout either wins or
        comes after the token.
        """
        settings = self.settings
        session, user = await self.use_session(ref, csrf=csrf, token_budget=settings.token_rate)
        request = domain.TokenRequest(
            issuer=settings.issuer,
            audience=audience,
            user=user,
            session=session,
            ttl=settings.access_token_ttl,
        )
        return self.keys.sign(domain.access_token_claims(request, self.accounts.clock()))

    async def mint_native(self, presented: str, *, audience: str, ip: str) -> Minted:
        """An access token for ``audience`` through a refresh handle, which is rotated.

        The token is the one :meth:`mint` signs (claims, budget). The handle returned replaces
        the one presented, which stops working at once, except as a retry within the grace (see
        ``store._REFRESH``). A handle already rotated away revokes the whole session.
        """
        settings = self.settings
        handle, throttle_key = await self._read_handle(presented, ip)
        successor = domain.new_refresh_secret()
        outcome = await self.accounts.sessions.refresh(
            handle,
            self.accounts.clock(),
            rotate_to=(domain.refresh_digest(successor), domain.seal_successor(handle.secret, successor)),
            grace=settings.native_refresh_grace,
            token_budget=settings.token_rate,
        )
        refreshed = await self._accepted(handle, outcome, throttle_key)
        if refreshed.sealed is not None:
            successor = domain.unseal_successor(handle.secret, refreshed.sealed)
        request = domain.TokenRequest(
            issuer=settings.issuer,
            audience=audience,
            user=refreshed.user,
            session=refreshed.session,
            ttl=settings.access_token_ttl,
        )
        access_token = self.keys.sign(domain.access_token_claims(request, self.accounts.clock()))
        return Minted(access_token, domain.refresh_handle(handle.session_id, successor))

    async def native_logout(self, presented: str, *, ip: str) -> None:
        """End the native session a refresh handle names, and the tokens it minted."""
        handle, throttle_key = await self._read_handle(presented, ip)
        outcome = await self.accounts.sessions.refresh(
            handle,
            self.accounts.clock(),
            rotate_to=None,
            grace=self.settings.native_refresh_grace,
            token_budget=self.settings.token_rate,
        )
        refreshed = await self._accepted(handle, outcome, throttle_key)
        await self._end_session(refreshed.session)

    async def _read_handle(self, presented: str, ip: str) -> tuple[RefreshHandle, str]:
        """The handle presented and the key of the client's failure budget; 429 when it is spent."""
        key = domain.refresh_throttle_key(ip)
        retry_after = await self.accounts.throttles.failure_wait(key, self.settings.refresh_failures)
        if retry_after:
            raise TooManyRequests("too many failed refreshes; try again later", retry_after=retry_after)
        handle = domain.read_refresh_handle(presented)
        if handle is None:
            await self.accounts.throttles.count_failure(key, self.settings.refresh_failures)
            raise _invalid_grant()
        return handle, key

    async def _accepted(
        self, handle: RefreshHandle, outcome: Refreshed | Refusal, throttle_key: str
    ) -> Refreshed:
        """The session a refresh reached, or the refusal (counted against the client's budget).

        A reused handle revokes its whole session first.
        """
        if isinstance(outcome, Refusal):
            await self.accounts.throttles.count_failure(throttle_key, self.settings.refresh_failures)
        if outcome is Refusal.REUSED:
            ref = handle.session
            sessions = self.accounts.sessions
            await self.accounts.revoking(
                Kind.SESSION,
                {domain.public_handle(ref.handle)},
                lambda: sessions.delete(ref.user_id, ref.handle),
            )
            self.on_refresh_reuse()
            # The session is named by its public handle (the tokens' sid); never the refresh handle.
            logger.warning(
                "a rotated-away refresh handle was presented again: session %s of user %s revoked",
                domain.public_handle(ref.handle),
                ref.user_id,
            )
            raise Unauthorized(
                "this refresh handle was already used; the session is revoked, log in again",
                code="refresh_reused",
            )
        if not isinstance(outcome, Refreshed):
            raise _invalid_grant()
        return outcome

    async def logout(self, session: Session) -> None:
        """End this session and the tokens it minted."""
        await self._end_session(session)

    async def _end_session(self, session: Session) -> None:
        sessions = self.accounts.sessions
        await self.accounts.revoking(
            Kind.SESSION, {session.public_handle}, lambda: sessions.delete(session.user_id, session.handle)
        )

    async def sessions_of(self, user: User) -> list[Session]:
        """The user's live sessions, newest first (the store's script drops the dead ones)."""
        return domain.newest_first(await self.accounts.sessions.live_for_user(user.id, self.accounts.clock()))

    async def all_users(self, admin: User) -> list[User]:
        require_admin(admin)
        return await self.accounts.users.all()

    async def revoke_own_session(self, user: User, public_handle: str) -> Session:
        """End one of the caller's sessions, named as ``GET /sessions`` shows it; the one ended."""
        live = await self.accounts.sessions.live_for_user(user.id, self.accounts.clock())
        target = next((session for session in live if session.public_handle == public_handle), None)
        if target is None:
            raise NotFound("no such session")
        await self._end_session(target)
        return target

    async def change_own_password(
        self, session: Session, user: User, current_password: str, new_password: str, ip: str
    ) -> NewSession:
        """The web's password change: the current password first, under the login budgets."""
        # Guessing the current password through a stolen session spends the login budgets.
        throttle_keys = await self._reserve_login_attempt(user.email, ip)
        if not await self.accounts.passwords.verify(user.password_hash, current_password):
            raise Forbidden("the current password is wrong", code="wrong_password")
        await self.accounts.throttles.refund(throttle_keys)
        return await self.accounts.change_password(user, new_password, renew=session)

    async def administer(self, admin: User, user_id: str, action: AdminAction) -> None:
        """An administrator's action on an account: 403 for anyone else, 404 for no such account."""
        require_admin(admin)
        target = await self.accounts.user_by_id(user_id)
        if action is AdminAction.REVOKE_SESSIONS:
            await self.accounts.revoke_sessions(target)
        else:
            await self.accounts.set_disabled(target, action is AdminAction.DISABLE)

    async def _reserve_login_attempt(self, email: str, ip: str) -> tuple[str, str, str]:
        """Spend one failure from the login budgets in advance, or 429 before any argon2 work."""
        policy = self.settings.login_throttle
        keys = policy.keys(email, ip)
        retry_after = await self.accounts.throttles.reserve_login(keys, policy.limits)
        if retry_after:
            raise TooManyRequests("too many failed logins; try again later", retry_after=retry_after)
        return keys


def _invalid_grant() -> Unauthorized:
    # One answer for a malformed, unknown, expired or revoked handle: which one is no one's business.
    return Unauthorized("the refresh handle is not valid; log in again", code="invalid_grant")


def require_admin(user: User) -> None:
    if user.role != "admin":
        raise Forbidden("administrators only", code="forbidden")


@dataclass(frozen=True)
class Rotation:
    """What ``keys rotate`` did: the new kid (None when no rotation was due) and the schedule."""

    kid: str | None
    schedule: Schedule
    pending: str | None = None


def rotate_signing_key(
    directory: Path, policy: RotationPolicy, *, if_active_for: float | None = None, now: float | None = None
) -> Rotation:
    """Publish a new signing key, or with ``if_active_for`` (cron) only when a rotation is due."""
    moment = time.time() if now is None else now
    if if_active_for is not None:
        schedule = read_schedule(directory)
        if not rotation_due(schedule, moment, active_for=if_active_for):
            return Rotation(kid=None, schedule=schedule, pending=next_kid(schedule, moment))
    kid = rotate_keys(directory, policy, now=moment)
    return Rotation(kid=kid, schedule=read_schedule(directory))


async def revoke_compromised_key(
    directory: Path, kid: str, policy: RotationPolicy, recorder: Recorder, *, now: float | None = None
) -> Entry:
    """The key-compromise drill: ``kid`` signs no more and every token it signed is refused; the entry.

    The key is retired first (``keys retire --force``: out of the JWKS, its successor signs), so
    a key that cannot be retired (the only one) records nothing that would refuse every new
    token. The entry's cutoff lies ahead of now (see :func:`revocations.revoke_key`). Run again
    after a failure, it records the entry for a key already gone.
    """
    moment = time.time() if now is None else now
    try:
        entry = revocations.revoke_key(
            kid, moment, token_ttl=policy.token_ttl, jwks_max_age=policy.jwks_max_age
        )
    except ValueError:
        raise ScheduleError(f"{kid!r} is not a key id") from None
    schedule = read_schedule(directory)
    if kid in schedule and schedule[kid].state(moment) is not KeyState.REMOVED:
        retire_key(directory, kid, policy, force=True, now=moment)
    await recorder.record([entry])
    return entry
