"""Sessions behind Redis Sentinel (a primary, a replica, three sentinels, started by the tests).

The store tests run unchanged through the Sentinel-managed primary too (``TOPOLOGY_RERUNS`` in
the conftest). Then the auth app's whole flow, and a forced failover while requests keep using
sessions: nothing written before it is lost, no request fails with anything but a 503, and auth
follows the new primary without a restart.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from deploy.redis_topologies import LocalSentinel
from services.auth import domain
from services.auth.app import create_app
from services.auth.domain import SessionPolicy
from services.auth.redis_client import connect
from services.auth.store import SessionStore
from shared.core import ServiceUnavailable
from tests.integration.test_auth_app import Session, settings_for, wait_for_demo_users
from tests.support.polling import poll

POLICY = SessionPolicy(idle=1800, absolute=86400)


@pytest.fixture
def redis_topology() -> str:
    return "sentinel"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """The store's client through the sentinels, as auth connects it."""
    client = connect(redis_url, 0.5)
    yield client
    await client.aclose()


async def test_the_client_talks_to_the_primary_the_sentinels_name(
    redis_sentinel: LocalSentinel, client: aioredis.Redis
) -> None:
    await client.set("probe", "1")
    served_by = int((await client.info("server"))["tcp_port"])
    assert served_by == redis_sentinel.primary_port()
    assert (await client.info("replication"))["role"] == "master"


def test_the_auth_app_logs_in_mints_and_logs_out_through_sentinel(redis_url: str, keys_dir: Path) -> None:
    with TestClient(create_app(settings_for(redis_url, keys_dir)), base_url="http://localhost:8001") as auth:
        wait_for_demo_users(auth)
        assert auth.get("/readyz").json()["checks"]["redis"] is True
        caller = Session(auth)
        assert caller.mint().status_code == 200
        assert auth.post("/logout", headers=caller.headers()).status_code == 200
        assert caller.mint().status_code == 401


@dataclass
class Outcome:
    at: float  # seconds after SENTINEL FAILOVER
    status: int
    body: dict[str, object]


def test_a_forced_failover_during_traffic_loses_no_session_and_auth_follows_by_itself(
    tmp_path: Path, keys_dir: Path
) -> None:
    with LocalSentinel(tmp_path / "sentinel") as deployment:
        # The loop mints far faster than any client would; the token budget is not under test.
        app = create_app(settings_for(deployment.url, keys_dir, TOKEN_RATE_LIMIT="1000000"))
        with TestClient(app, base_url="http://localhost:8001") as auth:
            wait_for_demo_users(auth)
            callers = [Session(auth, email) for email in ("alice@example.com", "admin@example.com") * 2]
            assert all(caller.mint().status_code == 200 for caller in callers)
            old_primary = deployment.primary_port()
            new_primary = deployment.other_data_port()
            # Sessions are replicated asynchronously: only what the replica has can survive.
            deployment.wait_for_replica_to_catch_up()

            deployment.failover()
            started = time.monotonic()
            outcomes: list[Outcome] = []
            switched_at = followed_at = clean_at = None
            switched_wall = 0.0
            while clean_at is None:
                assert time.monotonic() - started < 15, f"auth did not recover in 15 s: {outcomes[-8:]}"
                round_ok = True
                for caller in callers:
                    response = caller.mint()
                    at = time.monotonic() - started
                    outcomes.append(Outcome(at, response.status_code, response.json()))
                    round_ok &= response.status_code == 200
                if switched_at is None:
                    if deployment.names_primary(new_primary):
                        switched_at, switched_wall = time.monotonic() - started, time.time()
                elif followed_at is None:
                    # Each mint slides the session's idle timer: did one since the switch reach it?
                    if _last_seen(new_primary, callers[0]) >= switched_wall - 0.001:
                        followed_at = time.monotonic() - started
                elif round_ok:
                    clean_at = time.monotonic() - started

            failed = [outcome for outcome in outcomes if outcome.status != 200]
            first_success = next(outcome.at for outcome in outcomes if outcome.status == 200)
            print(
                f"\nforced failover: {len(outcomes)} token requests, {len(failed)} failed "
                f"{sorted({outcome.status for outcome in failed})}; first success {first_success:.3f} s "
                f"after SENTINEL FAILOVER; sentinels switched at {switched_at:.3f} s; auth writing to "
                f"the new primary at {followed_at:.3f} s; clean round at {clean_at:.3f} s"
            )
            for outcome in failed:
                assert outcome.status == 503, outcome
                assert set(outcome.body) == {"error", "detail"}
            assert clean_at < 10, f"auth took {clean_at:.1f} s to recover"

            # The old primary still takes writes until the sentinels demote it; what auth does now
            # must land on the new one, or the demotion (a resync) would undo it.
            logged_out, kept = callers[3], callers[0]
            assert auth.post("/logout", headers=logged_out.headers()).status_code == 200
            fresh = Session(auth)
            poll(
                lambda: _role(old_primary) == "slave",
                within=30,
                what="the old primary's demotion",
                ignoring=(redis.RedisError,),
            )
            deployment.wait_for_replica_to_catch_up()
            assert logged_out.mint().status_code == 401, "a logout right after the failover was undone"
            assert fresh.mint().status_code == 200, "a login right after the failover was lost"
            # Every session from before the failover is valid on the new primary.
            assert all(caller.mint().status_code == 200 for caller in (kept, callers[1], callers[2]))
            me = auth.get("/me", headers={"Cookie": f"__Host-session={kept.cookie}"})
            assert me.status_code == 200
            assert auth.get("/readyz").status_code == 200


def _last_seen(port: int, caller: Session) -> float:
    """When ``caller``'s session was last used, as the server on ``port`` has it (0 if absent)."""
    session_id = caller.cookie.rsplit(".", 1)[0]
    key = f"session:{{{caller.user['id']}}}:{domain.session_handle(session_id)}"
    with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as server:
        return int(server.hget(key, "seen") or 0) / 1000


def _role(port: int) -> str:
    with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as server:
        return str(server.info("replication")["role"])


def test_when_the_primary_dies_auth_answers_503_until_the_replica_is_promoted_then_recovers(
    tmp_path: Path, keys_dir: Path
) -> None:
    with LocalSentinel(tmp_path / "sentinel") as deployment:
        app = create_app(settings_for(deployment.url, keys_dir, TOKEN_RATE_LIMIT="1000000"))
        with TestClient(app, base_url="http://localhost:8001") as auth:
            wait_for_demo_users(auth)
            callers = [Session(auth), Session(auth, "admin@example.com")]
            assert all(caller.mint().status_code == 200 for caller in callers)
            deployment.wait_for_replica_to_catch_up()
            new_primary = deployment.other_data_port()
            assert deployment.primary.pid is not None
            os.kill(deployment.primary.pid, signal.SIGKILL)
            started = time.monotonic()
            outcomes: list[Outcome] = []
            slowest = 0.0
            recovered_at = None
            while recovered_at is None:
                assert time.monotonic() - started < 20, f"auth did not recover in 20 s: {outcomes[-4:]}"
                round_ok = True
                for caller in callers:
                    sent = time.monotonic()
                    response = caller.mint()
                    slowest = max(slowest, time.monotonic() - sent)
                    at = time.monotonic() - started
                    outcomes.append(Outcome(at, response.status_code, response.json()))
                    round_ok &= response.status_code == 200
                if round_ok and deployment.names_primary(new_primary):
                    recovered_at = time.monotonic() - started

            failed = [outcome for outcome in outcomes if outcome.status != 200]
            print(
                f"\nprimary killed: {len(outcomes)} token requests, {len(failed)} failed "
                f"{sorted({outcome.status for outcome in failed})}, the slowest answer {slowest:.3f} s; "
                f"recovered {recovered_at:.3f} s after the kill"
            )
            for outcome in failed:
                assert outcome.status == 503, outcome
                assert set(outcome.body) == {"error", "detail"}
            # Down-after (1 s) plus the sentinels' vote and promotion; no request hangs meanwhile.
            assert recovered_at < 10
            assert slowest < 2.0
            assert all(caller.mint().status_code == 200 for caller in callers)
            assert auth.get("/readyz").status_code == 200


async def test_a_password_protected_deployment_is_reached_with_the_urls_credentials(tmp_path: Path) -> None:
    # The Helm chart of deploy/k8s protects the data servers and the sentinels with one password.
    with LocalSentinel(tmp_path / "sentinel", password="s3cret/with:odd@chars") as protected:
        client = connect(protected.url, 0.5)
        try:
            await client.set("probe", "1")
            assert int((await client.info("server"))["tcp_port"]) == protected.primary_port()
        finally:
            await client.aclose()
        anonymous = connect(protected.url.replace(f"{quote('s3cret/with:odd@chars', safe='')}@", "@"), 0.5)
        started = time.monotonic()
        try:
            with pytest.raises(ServiceUnavailable):
                await SessionStore(anonymous, POLICY).ping()
        finally:
            await anonymous.aclose()
        # Refused by every sentinel, as fast as an unreachable Redis: not after redis-py's own
        # retries with backoff (about 20 s for three sentinels).
        assert time.monotonic() - started < 5
