"""Session index, throttles and client addresses against a real Redis (and a real socket for the last)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from services.auth import domain
from services.auth.app import create_app
from services.auth.domain import RateLimit, SessionPolicy, User
from services.auth.passwords import Passwords
from services.auth.redis_client import connect
from services.auth.settings import DEMO_PASSWORD
from services.auth.store import Refusal, SessionStore, ThrottleStore
from shared.core import TooManyRequests
from tests.integration.test_auth_app import ORIGIN, login, settings_for, wait_for_demo_users
from tests.support.polling import poll
from tests.support.servers import ServerThread

NOW = 1_800_000_000.0
POLICY = SessionPolicy(idle=1800, absolute=86400)
ALICE = User(id="u-alice", email="alice@example.com", role="user", password_hash="x")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_url, 0.5)
    yield client
    await client.aclose()


@pytest.fixture
def sessions(client: aioredis.Redis) -> SessionStore:
    return SessionStore(client, POLICY)


async def _new(sessions: SessionStore, now: float = NOW) -> domain.Session:
    session = domain.new_session(
        domain.new_session_id(ALICE.id), ALICE, now, user_agent="pytest", ip="127.0.0.1"
    )
    await sessions.create(session, now)
    return session


async def listed(sessions: SessionStore, user_id: str, handle: str, now: float) -> domain.Session | None:
    """The session as the store lists it at ``now`` (the script judges it), or None if it is dead."""
    return next(
        (found for found in await sessions.live_for_user(user_id, now) if found.handle == handle), None
    )


async def _account(client: aioredis.Redis, user: User = ALICE, *, disabled: bool = False) -> None:
    """The user's record, which a session needs before it can be used."""
    fields = {"id": user.id, "email": user.email, "role": user.role, "password_hash": user.password_hash}
    await client.hset(f"user:{{{user.id}}}", mapping={**fields, "disabled": "1" if disabled else "0"})


async def _index(client: aioredis.Redis) -> set[str]:
    return {str(handle) for handle in await client.smembers(f"user-sessions:{{{ALICE.id}}}")}


async def test_live_sessions_are_listed_from_the_index(sessions: SessionStore) -> None:
    first, second = await _new(sessions), await _new(sessions, NOW + 5)
    listed = await sessions.live_for_user(ALICE.id, NOW + 10)
    assert {s.handle for s in listed} == {first.handle, second.handle}


async def test_a_session_expired_by_the_policy_is_not_listed_and_leaves_the_index(
    sessions: SessionStore, client: aioredis.Redis
) -> None:
    idle = await _new(sessions)
    fresh = await _new(sessions, NOW + 1000)
    # Redis has not expired it yet (its TTL runs on Redis' own clock); the policy says it is dead.
    listed = await sessions.live_for_user(ALICE.id, NOW + 1800)
    assert [s.handle for s in listed] == [fresh.handle]
    assert await _index(client) == {fresh.handle}
    assert not await client.exists(f"session:{{{ALICE.id}}}:{idle.handle}")


async def test_a_session_redis_expired_is_pruned_from_the_index_on_read(
    sessions: SessionStore, client: aioredis.Redis
) -> None:
    gone, kept = await _new(sessions), await _new(sessions)
    # What Redis does when the session's TTL runs out: the record goes, the index entry stays.
    await client.delete(f"session:{{{ALICE.id}}}:{gone.handle}")
    assert await _index(client) == {gone.handle, kept.handle}
    assert [s.handle for s in await sessions.live_for_user(ALICE.id, NOW + 1)] == [kept.handle]
    assert await _index(client) == {kept.handle}


async def test_dead_index_entries_are_pruned_on_write(sessions: SessionStore, client: aioredis.Redis) -> None:
    gone = await _new(sessions)
    await client.delete(f"session:{{{ALICE.id}}}:{gone.handle}")
    added = await _new(sessions)
    assert await _index(client) == {added.handle}


async def test_the_index_expires_no_sooner_than_its_longest_session(
    sessions: SessionStore, client: aioredis.Redis
) -> None:
    await _new(sessions)
    ttl = await client.ttl(f"user-sessions:{{{ALICE.id}}}")
    assert POLICY.absolute - 5 <= ttl <= POLICY.absolute


async def test_concurrent_logins_and_revocations_keep_the_index_exact(
    sessions: SessionStore, client: aioredis.Redis
) -> None:
    async def create_many() -> None:
        for _ in range(40):
            await _new(sessions)

    async def revoke_repeatedly() -> None:
        for _ in range(10):
            await sessions.delete_all_for_user(ALICE.id)
            await asyncio.sleep(0)

    await asyncio.gather(create_many(), create_many(), revoke_repeatedly(), create_many())
    indexed = await _index(client)
    stored = {
        str(key).removeprefix(f"session:{{{ALICE.id}}}:") async for key in client.scan_iter(match="session:*")
    }
    # Every stored session is indexed (a revoke-all cannot miss one) and every entry is stored.
    assert indexed == stored
    await sessions.delete_all_for_user(ALICE.id)
    assert not [key async for key in client.scan_iter(match="session:*")]


async def test_revoke_others_replaces_every_session_in_one_step(
    sessions: SessionStore, client: aioredis.Redis
) -> None:
    current, other = await _new(sessions), await _new(sessions)
    renewed = domain.renewed_session(current, domain.new_session_id(ALICE.id), NOW + 10)
    await sessions.create(renewed, NOW + 10, revoke_others=True)
    assert await _index(client) == {renewed.handle}
    assert await listed(sessions, ALICE.id, current.handle, NOW + 10) is None
    assert await listed(sessions, ALICE.id, other.handle, NOW + 10) is None
    assert await listed(sessions, ALICE.id, renewed.handle, NOW + 10) == renewed


async def test_touch_reports_a_session_revoked_since_it_was_read(
    sessions: SessionStore, client: aioredis.Redis
) -> None:
    await _account(client)
    session = await _new(sessions)
    assert isinstance(await sessions.use(ALICE.id, session.handle, NOW + 1), tuple)
    await sessions.delete(ALICE.id, session.handle)
    assert await sessions.use(ALICE.id, session.handle, NOW + 2) is Refusal.NO_SESSION


LOGIN = (RateLimit(100, 60), RateLimit(5, 60), RateLimit(100, 60))
# One hash tag, as LoginThrottlePolicy.keys gives them: the Cluster tests run these too.
KEYS = ("throttle:{login}:t-ip", "throttle:{login}:t-pair", "throttle:{login}:t-account")


async def test_parallel_guesses_cannot_overspend_a_login_budget(client: aioredis.Redis) -> None:
    throttles = ThrottleStore(client)
    waits = await asyncio.gather(*(throttles.reserve_login(KEYS, LOGIN) for _ in range(30)))
    assert waits.count(0) == 5
    assert all(1 <= wait <= 60 for wait in waits if wait)
    assert int(await client.get(KEYS[1]) or 0) == 5


async def test_every_throttle_counter_expires_with_its_window(
    client: aioredis.Redis, sessions: SessionStore
) -> None:
    throttles = ThrottleStore(client)
    await throttles.reserve_login(KEYS, LOGIN)
    await _account(client)
    session = await _new(sessions)
    await sessions.use(ALICE.id, session.handle, NOW, token_budget=RateLimit(3, 20))
    for key in KEYS:
        assert 0 < await client.ttl(key) <= 60
    assert 0 < await client.ttl(f"throttle:token:{{{ALICE.id}}}:{session.handle}") <= 20


async def test_a_refund_gives_back_a_reserved_attempt(client: aioredis.Redis) -> None:
    throttles = ThrottleStore(client)
    for _ in range(10):
        assert await throttles.reserve_login(KEYS, LOGIN) == 0
        await throttles.refund(KEYS)
    assert [int(await client.get(key) or 0) for key in KEYS] == [0, 0, 0]


async def test_an_account_under_attack_refuses_only_addresses_that_failed_on_it(
    client: aioredis.Redis,
) -> None:
    throttles = ThrottleStore(client)
    limits = (RateLimit(100, 60), RateLimit(5, 60), RateLimit(3, 60))

    def keys(ip: str) -> tuple[str, str, str]:
        return (f"throttle:ip:{ip}", f"throttle:pair:{ip}", "throttle:account")

    for ip in ("a", "b", "c"):
        assert await throttles.reserve_login(keys(ip), limits) == 0
    # The account is past its budget: an address that failed on it waits ...
    assert await throttles.reserve_login(keys("a"), limits) > 0
    # ... a new one gets a single guess, and the owner's own address is not locked.
    assert await throttles.reserve_login(keys("d"), limits) == 0
    assert await throttles.reserve_login(keys("d"), limits) > 0
    assert await throttles.reserve_login(keys("owner"), limits) == 0


async def test_token_uses_past_the_rate_wait_for_the_window_and_leave_the_session_untouched(
    client: aioredis.Redis, sessions: SessionStore
) -> None:
    await _account(client)
    session = await _new(sessions)
    budget = RateLimit(3, 20)
    for second in (1, 2, 3):
        assert isinstance(
            await sessions.use(ALICE.id, session.handle, NOW + second, token_budget=budget), tuple
        )
    with pytest.raises(TooManyRequests) as caught:
        await sessions.use(ALICE.id, session.handle, NOW + 4, token_budget=budget)
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 20
    stored = await listed(sessions, ALICE.id, session.handle, NOW + 5)
    assert stored is not None
    assert stored.last_seen == NOW + 3, "a refused use does not slide the idle timer"


async def test_a_budgeted_touch_of_a_revoked_session_spends_nothing(
    client: aioredis.Redis, sessions: SessionStore
) -> None:
    await _account(client)
    session = await _new(sessions)
    await sessions.delete(session.user_id, session.handle)
    used = await sessions.use(ALICE.id, session.handle, NOW, token_budget=RateLimit(3, 20))
    assert used is Refusal.NO_SESSION
    assert not await client.exists(f"session:{{{ALICE.id}}}:{session.handle}"), "no stub revived"
    assert not await client.exists(f"throttle:token:{{{ALICE.id}}}:{session.handle}")


def _ready_without_spent_budgets(test_client: TestClient, redis_url: str) -> None:
    """Wait for the demo users, then check that waiting spent no login budget."""
    wait_for_demo_users(test_client)
    with redis.Redis.from_url(redis_url) as sync_client:
        assert not list(sync_client.scan_iter(match="throttle:*"))


def test_a_throttled_login_runs_no_argon2(
    redis_url: str, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str | None] = []
    original = Passwords.verify

    async def counting_verify(self: Passwords, password_hash: str | None, password: str) -> bool:
        verified.append(password_hash)
        return await original(self, password_hash, password)

    monkeypatch.setattr(Passwords, "verify", counting_verify)
    settings = settings_for(redis_url, keys_dir, LOGIN_ACCOUNT_IP_LIMIT="2")
    with TestClient(create_app(settings), base_url="http://localhost:8001") as test_client:
        _ready_without_spent_budgets(test_client, redis_url)
        for email in ("alice@example.com", "nobody@example.com"):
            verified.clear()
            statuses = [login(test_client, email=email, password="wrong-pw-1").status_code for _ in range(4)]
            assert statuses == [401, 401, 429, 429]
            # Two argon2 runs for the two failures, including the dummy one for the unknown email.
            assert len(verified) == 2


def test_a_successful_login_spends_no_budget(redis_url: str, keys_dir: Path) -> None:
    settings = settings_for(redis_url, keys_dir, LOGIN_ACCOUNT_IP_LIMIT="2")
    with TestClient(create_app(settings), base_url="http://localhost:8001") as test_client:
        _ready_without_spent_budgets(test_client, redis_url)
        assert all(login(test_client).status_code == 200 for _ in range(5))
        assert login(test_client, password="wrong-password!").status_code == 401
        assert login(test_client).status_code == 200


@pytest.fixture
def auth_behind_a_proxy(redis_url: str, keys_dir: Path) -> Iterator[str]:
    """Auth trusting only 127.0.0.2 as its proxy; the URL to reach it."""
    settings = settings_for(redis_url, keys_dir, TRUSTED_PROXIES="127.0.0.2")
    with ServerThread(create_app(settings), lifespan="on") as server:
        yield server.url


def _recorded_ip(url: str, local_address: str, forwarded_for: str) -> str:
    transport = httpx.HTTPTransport(local_address=local_address)
    with httpx.Client(base_url=url, transport=transport, timeout=10) as http:
        poll(lambda: http.get("/readyz").status_code == 200, within=10, what="the demo users being seeded")
        response = http.post(
            "/login",
            json={"email": "alice@example.com", "password": DEMO_PASSWORD},
            headers={"Origin": ORIGIN, "X-Forwarded-For": forwarded_for},
        )
        assert response.status_code == 200, response.text
        cookie = response.headers["set-cookie"].split(";")[0]
        listed = http.get("/sessions", headers={"Cookie": cookie}).json()["sessions"]
    return str(next(s["ip"] for s in listed if s["current"]))


def test_a_client_reaching_auth_directly_cannot_spoof_its_address(auth_behind_a_proxy: str) -> None:
    assert _recorded_ip(auth_behind_a_proxy, "127.0.0.1", "203.0.113.9") == "127.0.0.1"


def test_the_trusted_proxys_forwarded_for_names_the_client(auth_behind_a_proxy: str) -> None:
    # The client wrote 198.51.100.7 itself; the proxy appended what it saw: 203.0.113.9.
    assert _recorded_ip(auth_behind_a_proxy, "127.0.0.2", "198.51.100.7, 203.0.113.9") == "203.0.113.9"


async def test_a_use_with_the_sessions_csrf_token_is_allowed(
    sessions: SessionStore, client: aioredis.Redis
) -> None:
    await _account(client)
    session = await _new(sessions)
    used = await sessions.use(ALICE.id, session.handle, NOW + 1, csrf=session.csrf_token)
    assert isinstance(used, tuple)
    assert used[0].last_seen == NOW + 1


@pytest.mark.parametrize(
    "presented",
    ["", "{token}x", "{token_short}", "{token_upper}", "é", "{other}"],
    ids=["empty", "longer", "shorter", "case", "non-ascii", "another-sessions"],
)
async def test_a_use_with_any_other_csrf_token_is_refused_and_touches_nothing(
    sessions: SessionStore, client: aioredis.Redis, presented: str
) -> None:
    await _account(client)
    session, other = await _new(sessions), await _new(sessions)
    token = session.csrf_token
    presented = presented.format(
        token=token, token_short=token[:-1], token_upper=token.upper(), other=other.csrf_token
    )
    budget = RateLimit(3, 20)
    assert await sessions.use(ALICE.id, session.handle, NOW + 5, csrf=presented, token_budget=budget) is (
        Refusal.CSRF
    )
    stored = await listed(sessions, ALICE.id, session.handle, NOW + 6)
    assert stored is not None
    assert stored.last_seen == NOW, "a refused use does not slide the idle timer"
    assert not await client.exists(f"throttle:token:{{{ALICE.id}}}:{session.handle}"), "nor spend budget"


@pytest.mark.parametrize("disabled", [True, False], ids=["disabled", "deleted"])
async def test_a_session_whose_account_is_disabled_or_gone_is_refused_and_deleted(
    sessions: SessionStore, client: aioredis.Redis, disabled: bool
) -> None:
    await _account(client, disabled=disabled)
    session = await _new(sessions)
    if not disabled:
        await client.delete(f"user:{{{ALICE.id}}}")
    assert await sessions.use(ALICE.id, session.handle, NOW + 1) is Refusal.NO_SESSION
    assert not await client.exists(f"session:{{{ALICE.id}}}:{session.handle}")
    assert session.handle not in await _index(client)


# Around both timeouts (idle 1800 s, absolute 86400 s), to the millisecond: (when the session was
# last used, when it is used next, whether that use finds it live). A session ends at the earlier
# of last use + idle and creation + absolute, and is dead at exactly that instant.
LIVENESS_PROBES = [
    (NOW, NOW + 1799.999, True),
    (NOW, NOW + 1800, False),
    (NOW, NOW + 1800.001, False),
    (NOW + 1000, NOW + 2799.999, True),
    (NOW + 1000, NOW + 2800, False),
    (NOW + 86000, NOW + 86399.999, True),
    (NOW + 86000, NOW + 86400, False),
    (NOW + 86000, NOW + 86400.5, False),
]


@pytest.mark.parametrize(("last_used", "probe", "live"), LIVENESS_PROBES)
async def test_the_stores_script_enforces_both_timeouts_to_the_millisecond(
    sessions: SessionStore, client: aioredis.Redis, last_used: float, probe: float, live: bool
) -> None:
    # The script is where the lifetime rule is enforced (store._LIFETIME): probed, not restated.
    await _account(client)
    session = await _new(sessions)
    step = last_used
    while step > NOW and session.last_seen < last_used:
        step = min(session.last_seen + 1500, last_used)
        used = await sessions.use(ALICE.id, session.handle, step)
        assert isinstance(used, tuple)
        session = used[0]
    used = await sessions.use(ALICE.id, session.handle, probe)
    assert isinstance(used, tuple) == live
    if live:
        assert isinstance(used, tuple)
        assert used[0].expires_at == min(probe + 1800, NOW + 86400)
