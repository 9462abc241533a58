"""Users and sessions in Redis. Every multi-key change runs in one MULTI/EXEC transaction.

Keys: ``user:<id>`` (hash), ``user-email:<email>`` (id), ``session:<handle>`` (hash, with a
TTL that follows the session policy) and ``user-sessions:<user id>`` (set of handles).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from services.auth.domain import Session, SessionPolicy, User
from shared import Conflict, NotFound, ServiceUnavailable

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def connect(url: str, timeout: float) -> redis.Redis:
    """A client that fails within about ``2 * timeout`` instead of hanging when Redis is away."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # One quick retry heals a pooled connection that died with a Redis restart; a timeout is
        # not retried, so a hung server costs one socket timeout, not two.
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        health_check_interval=30,
    )


def _unavailable_on_redis_error(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except RedisError as exc:
            logger.warning("redis unavailable: %s", type(exc).__name__)
            raise ServiceUnavailable("the session store is unavailable") from None

    return wrapper


def _text(value: bytes | str) -> str:
    # The client decodes responses; this only narrows redis-py's bytes-or-str annotations.
    return value.decode() if isinstance(value, bytes) else value


def _texts(fields: dict[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(key): _text(value) for key, value in fields.items()}


def _user_key(user_id: str) -> str:
    return f"user:{user_id}"


def _email_key(email: str) -> str:
    return f"user-email:{email}"


def _session_key(handle: str) -> str:
    return f"session:{handle}"


def _index_key(user_id: str) -> str:
    return f"user-sessions:{user_id}"


_CREATE_USER = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
    redis.call('HSET', KEYS[2], 'id', ARGV[1], 'email', ARGV[2], 'role', ARGV[3], 'password_hash', ARGV[4])
    return 1
end
return 0
"""


class UserStore:
    """Accounts by id and by normalized email."""

    def __init__(self, client: redis.Redis):
        self._redis = client
        self._create = client.register_script(_CREATE_USER)

    @_unavailable_on_redis_error
    async def create(self, email: str, role: str, password_hash: str) -> User:
        """Store a new account; :class:`Conflict` if the email is taken."""
        user = User(id=uuid.uuid4().hex, email=email, role=role, password_hash=password_hash)
        # One script claims the email and writes the account, so two concurrent creations cannot
        # both win and a failure cannot leave an email claimed by no account.
        created = await self._create(
            keys=[_email_key(email), _user_key(user.id)], args=[user.id, email, role, password_hash]
        )
        if not created:
            raise Conflict("an account with this email exists", code="email_taken")
        return user

    @_unavailable_on_redis_error
    async def by_email(self, email: str) -> User | None:
        user_id = await self._redis.get(_email_key(email))
        return None if user_id is None else await self.by_id(_text(user_id))

    @_unavailable_on_redis_error
    async def by_id(self, user_id: str) -> User | None:
        fields = _texts(await self._redis.hgetall(_user_key(user_id)))
        if not fields:
            return None
        return User(
            id=fields["id"], email=fields["email"], role=fields["role"], password_hash=fields["password_hash"]
        )

    @_unavailable_on_redis_error
    async def all(self) -> list[User]:
        users = []
        async for key in self._redis.scan_iter(match="user:*", count=500):
            user = await self.by_id(_text(key).removeprefix("user:"))
            if user is not None:
                users.append(user)
        return sorted(users, key=lambda user: user.email)

    @_unavailable_on_redis_error
    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        if not await self._redis.exists(_user_key(user_id)):
            raise NotFound("no such user")
        await self._redis.hset(_user_key(user_id), "password_hash", password_hash)


_REVOKE_ALL = """
local revoked = 0
for _, handle in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    revoked = revoked + redis.call('DEL', ARGV[1] .. handle)
end
redis.call('DEL', KEYS[1])
return revoked
"""


_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HSET', KEYS[1], 'last_seen', ARGV[1])
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"""


class SessionStore:
    """Server-side sessions with a per-user index, both kept consistent transactionally."""

    def __init__(self, client: redis.Redis, policy: SessionPolicy):
        self._redis = client
        self.policy = policy
        self._revoke_all = client.register_script(_REVOKE_ALL)
        self._touch = client.register_script(_TOUCH)

    @_unavailable_on_redis_error
    async def create(self, session: Session, now: float) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(_session_key(session.handle), mapping=_session_fields(session))
            pipe.expire(_session_key(session.handle), self.policy.ttl(session, now))
            pipe.sadd(_index_key(session.user_id), session.handle)
            pipe.expire(_index_key(session.user_id), self.policy.absolute, gt=True)
            pipe.expire(_index_key(session.user_id), self.policy.absolute, nx=True)
            await pipe.execute()

    @_unavailable_on_redis_error
    async def get(self, handle: str, now: float) -> Session | None:
        """The live session, or None. A session past either timeout is deleted on sight."""
        fields = _texts(await self._redis.hgetall(_session_key(handle)))
        if not fields:
            return None
        session = _session_from_fields(handle, fields)
        if session is None or not self.policy.is_live(session, now):
            await self.delete(handle, fields.get("user_id", ""))
            return None
        return session

    @_unavailable_on_redis_error
    async def touch(self, session: Session, now: float) -> Session:
        """Record a use: the idle timer restarts, bounded by the absolute timeout."""
        touched = self.policy.touched(session, now)
        # Only if it still exists: a logout racing this request must not leave a stub behind.
        await self._touch(
            keys=[_session_key(session.handle)], args=[repr(now), self.policy.ttl(touched, now)]
        )
        return touched

    @_unavailable_on_redis_error
    async def delete(self, handle: str, user_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_session_key(handle))
            if user_id:
                pipe.srem(_index_key(user_id), handle)
            await pipe.execute()

    @_unavailable_on_redis_error
    async def delete_all_for_user(self, user_id: str) -> int:
        """Revoke every session of a user (password change, logout everywhere); the count revoked."""
        # One script, so a session created concurrently cannot slip between read and delete.
        revoked = await self._revoke_all(keys=[_index_key(user_id)], args=[_session_key("")])
        return int(revoked)

    @_unavailable_on_redis_error
    async def ping(self) -> bool:
        return bool(await self._redis.ping())


def _session_fields(session: Session) -> dict[FieldT, EncodableT]:
    return {
        "user_id": session.user_id,
        "created_at": repr(session.created_at),
        "last_seen": repr(session.last_seen),
        "csrf_token": session.csrf_token,
        "user_agent": session.user_agent,
        "ip": session.ip,
    }


def _session_from_fields(handle: str, fields: dict[str, str]) -> Session | None:
    try:
        return Session(
            handle=handle,
            user_id=fields["user_id"],
            created_at=float(fields["created_at"]),
            last_seen=float(fields["last_seen"]),
            csrf_token=fields["csrf_token"],
            user_agent=fields.get("user_agent", ""),
            ip=fields.get("ip", ""),
        )
    except (KeyError, ValueError):
        logger.warning("discarding a malformed session record")
        return None
