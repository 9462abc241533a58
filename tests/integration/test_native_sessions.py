"""Native sessions against a real Redis: login, rotation, the grace retry, theft, timeouts, refusals."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from itsdangerous import Signer
from starlette.testclient import TestClient

from services.auth import domain
from services.auth.app import create_app
from services.auth.domain import RateLimit, SessionPolicy, User
from services.auth.redis_client import connect
from services.auth.settings import DEMO_PASSWORD
from services.auth.store import Refreshed, Refusal, SessionStore
from tests.integration.test_auth_app import (
    ORIGIN,
    FakeClock,
    Session,
    claims_of,
    settings_for,
    wait_for_demo_users,
)
from tests.support.servers import ServerThread

ALICE = "alice@example.com"


def native_login(client: TestClient, email: str = ALICE, **kw: Any) -> httpx.Response:
    return client.post("/native/login", json={"email": email, "password": DEMO_PASSWORD}, **kw)


def first_handle(client: TestClient, email: str = ALICE) -> str:
    response = native_login(client, email)
    assert response.status_code == 200, response.text
    handle: str = response.json()["refresh_handle"]
    return handle


def refresh(client: TestClient, handle: str, audience: str = "orders", **kw: Any) -> httpx.Response:
    return client.post("/native/token", json={"refresh_handle": handle, "audience": audience}, **kw)


def rotated(client: TestClient, handle: str) -> str:
    response = refresh(client, handle)
    assert response.status_code == 200, response.text
    successor: str = response.json()["refresh_handle"]
    return successor


def error_of(response: httpx.Response) -> str:
    code: str = response.json()["error"]
    return code


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(redis_url: str, keys_dir: Path, clock: FakeClock) -> Iterator[Any]:
    """Auth in process with ``overrides`` in its environment and the test's clock."""
    opened: list[TestClient] = []

    def make(**overrides: str) -> TestClient:
        app = create_app(settings_for(redis_url, keys_dir, **overrides), clock=clock)
        client = TestClient(app, base_url="http://localhost:8001").__enter__()
        opened.append(client)
        wait_for_demo_users(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Any) -> TestClient:
    made: TestClient = make_client()
    return made


def test_native_login_sets_no_cookie_and_hands_out_an_opaque_handle(client: TestClient) -> None:
    response = native_login(client, headers={"User-Agent": "hybrid-cli/1.0"})
    assert response.status_code == 200, response.text
    assert "set-cookie" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["user"]["email"] == ALICE
    assert domain.read_refresh_handle(body["refresh_handle"]) is not None
    # Listed beside the browser's own session, marked native; its CSRF token is never exposed.
    browser = Session(client)
    listed = client.get("/sessions", headers={"Cookie": f"__Host-session={browser.cookie}"}).json()
    kinds = {(s["kind"], s["current"], s["user_agent"]) for s in listed["sessions"]}
    assert kinds == {("native", False, "hybrid-cli/1.0"), ("browser", True, "testclient")}


def test_native_login_fails_like_the_browser_login(client: TestClient) -> None:
    wrong = client.post("/native/login", json={"email": ALICE, "password": "not the password!"})
    unknown = client.post("/native/login", json={"email": "nobody@example.com", "password": DEMO_PASSWORD})
    assert (wrong.status_code, error_of(wrong)) == (401, "invalid_credentials")
    assert (unknown.status_code, unknown.json()) == (401, wrong.json())


def test_a_handle_mints_the_token_the_cookie_would_and_rotates(client: TestClient) -> None:
    handle = first_handle(client)
    response = refresh(client, handle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 300)
    assert body["refresh_handle"] != handle
    header, claims = claims_of(body["access_token"])
    from_cookie = claims_of(Session(client).mint().json()["access_token"])[1]
    assert header["typ"] == "at+jwt"
    assert set(claims) == set(from_cookie)
    assert {k: claims[k] for k in ("iss", "sub", "aud", "role", "client_id")} == {
        k: from_cookie[k] for k in ("iss", "sub", "aud", "role", "client_id")
    }
    # The sid is the native session's, as /sessions names it.
    ref = domain.read_refresh_handle(handle)
    assert ref is not None
    assert claims["sid"] == domain.public_handle(ref.session.handle)


def test_rotating_many_times_keeps_one_session_and_one_sid(client: TestClient) -> None:
    handle = first_handle(client)
    sids = set()
    handles = [handle]
    for _ in range(30):
        response = refresh(client, handles[-1])
        assert response.status_code == 200, response.text
        handles.append(response.json()["refresh_handle"])
        sids.add(claims_of(response.json()["access_token"])[1]["sid"])
    assert len(set(handles)) == len(handles)
    assert len(sids) == 1
    # Every handle but the last was rotated away: one of them again is theft (see below).
    assert len({domain.read_refresh_handle(h).session_id for h in handles}) == 1  # type: ignore[union-attr]


def test_a_rotated_away_handle_revokes_the_session_and_its_tokens(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    old = first_handle(client)
    middle = rotated(client, old)
    current_response = refresh(client, middle)
    token = current_response.json()["access_token"]
    current = current_response.json()["refresh_handle"]
    sid = claims_of(token)[1]["sid"]
    with caplog.at_level(logging.WARNING):
        stolen = refresh(client, old)
    assert (stolen.status_code, error_of(stolen)) == (401, "refresh_reused")
    assert old not in stolen.text
    assert current not in stolen.text
    assert not any(old.rsplit(".", 1)[1] in record.getMessage() for record in caplog.records)
    assert any(sid in record.getMessage() for record in caplog.records)
    # The session is gone for its holder too, and every token it minted is in the feed.
    gone = refresh(client, current)
    assert (gone.status_code, error_of(gone)) == (401, "invalid_grant")
    feed = client.get("/.well-known/revocations.json")
    assert feed.status_code == 200
    _, feed_claims = claims_of(feed.text)
    entries = [e for e in feed_claims["entries"] if e == {**e, "kind": "session", "id": sid}]
    assert entries
    assert entries[0]["before"] > claims_of(token)[1]["iat"]
    metrics = client.get("/metrics").text
    assert "auth_refresh_reuse_total 1.0" in metrics


def test_the_grace_retry_answers_the_same_successor_until_it_is_used(
    client: TestClient, clock: FakeClock
) -> None:
    old = first_handle(client)
    successor = rotated(client, old)
    clock.now += 5
    # The response was lost: the same handle again, within the grace, gets the same successor.
    retried = refresh(client, old)
    assert retried.status_code == 200, retried.text
    assert retried.json()["refresh_handle"] == successor
    # Once the successor is used, the old handle is theft.
    newest = rotated(client, successor)
    stolen = refresh(client, old)
    assert (stolen.status_code, error_of(stolen)) == (401, "refresh_reused")
    assert error_of(refresh(client, newest)) == "invalid_grant"


def test_past_the_grace_a_retry_is_theft(client: TestClient, clock: FakeClock) -> None:
    old = first_handle(client)
    successor = rotated(client, old)
    clock.now += 10
    assert error_of(refresh(client, old)) == "refresh_reused"
    assert error_of(refresh(client, successor)) == "invalid_grant"


def test_without_a_grace_any_second_use_is_theft(make_client: Any) -> None:
    client = make_client(NATIVE_REFRESH_GRACE_SECONDS="0")
    old = first_handle(client)
    successor = rotated(client, old)
    assert error_of(refresh(client, old)) == "refresh_reused"
    assert error_of(refresh(client, successor)) == "invalid_grant"


@pytest.mark.parametrize("grace", [0.0, 10.0])
async def test_concurrent_refreshes_with_one_handle_rotate_once(redis_url: str, grace: float) -> None:
    store_client = connect(redis_url, 2.0)
    try:
        sessions = SessionStore(store_client, SessionPolicy(idle=1800, absolute=86400))
        user = User(id="u-native", email="n@example.com", role="user", password_hash="x")
        await store_client.hset(
            "user:{u-native}",
            mapping={"id": user.id, "email": user.email, "role": "user", "password_hash": "x"},
        )
        now = time.time()
        session_id = domain.new_session_id(user.id)
        secret = domain.new_refresh_secret()
        session = domain.new_native_session(session_id, user, now, user_agent="", ip="")
        await sessions.create(session, now, refresh_digest=domain.refresh_digest(secret))
        handle = domain.read_refresh_handle(domain.refresh_handle(session_id, secret))
        assert handle is not None

        async def one() -> tuple[Refreshed | Refusal, str]:
            successor = domain.new_refresh_secret()
            sealed = domain.seal_successor(handle.secret, successor)
            outcome = await sessions.refresh(
                handle,
                now + 0.001,
                rotate_to=(domain.refresh_digest(successor), sealed),
                grace=grace,
                token_budget=RateLimit(100, 60),
            )
            return outcome, successor

        outcomes = await asyncio.gather(*(one() for _ in range(12)))
    finally:
        await store_client.aclose()
    winners = [
        made for outcome, made in outcomes if isinstance(outcome, Refreshed) and outcome.sealed is None
    ]
    assert len(winners) == 1
    others = [
        outcome for outcome, _ in outcomes if not (isinstance(outcome, Refreshed) and outcome.sealed is None)
    ]
    if grace:
        # Every retry within the grace reads back the one successor the winner stored.
        assert all(isinstance(o, Refreshed) and o.sealed for o in others)
        unsealed = {
            domain.unseal_successor(handle.secret, o.sealed)
            for o in others
            if isinstance(o, Refreshed) and o.sealed
        }
        assert unsealed == set(winners)
    else:
        assert others == [Refusal.REUSED] * 11


def test_cookies_and_query_strings_never_reach_native_routes(client: TestClient) -> None:
    handle = first_handle(client)
    browser = Session(client)
    cookie = {"Cookie": f"__Host-session={browser.cookie}"}
    for response in (
        native_login(client, headers=cookie),
        refresh(client, handle, headers=cookie),
        client.post("/native/logout", json={"refresh_handle": handle}, headers=cookie),
    ):
        assert (response.status_code, error_of(response)) == (400, "cookie_not_accepted")
    # A forged, unsigned cookie is refused the same way: the name is enough.
    assert error_of(refresh(client, handle, headers={"Cookie": "__Host-session=x"})) == "cookie_not_accepted"
    in_url = client.post(
        f"/native/token?refresh_handle={handle}", json={"refresh_handle": handle, "audience": "orders"}
    )
    assert (in_url.status_code, error_of(in_url)) == (400, "query_not_accepted")
    assert handle not in in_url.text
    # Nothing above spent or rotated the handle.
    assert refresh(client, handle).status_code == 200
    # A browser's cookie value (its session id and signature) is no handle, and revokes nothing.
    cookie_as_handle = refresh(client, browser.cookie)
    assert (cookie_as_handle.status_code, error_of(cookie_as_handle)) == (401, "invalid_grant")
    assert client.get("/me", headers=cookie).status_code == 200


def test_a_handle_never_works_on_a_cookie_route(client: TestClient, redis_url: str, keys_dir: Path) -> None:
    handle = first_handle(client)
    parsed = domain.read_refresh_handle(handle)
    assert parsed is not None
    for headers in (
        {"Cookie": f"__Host-session={handle}"},
        {"Cookie": f"__Host-session={parsed.session_id}"},
        {"Authorization": f"Bearer {handle}"},
    ):
        assert client.get("/me", headers=headers).status_code == 401
        minted = client.post("/token", json={"audience": "orders"}, headers={**headers, "Origin": ORIGIN})
        assert minted.status_code in (401, 403)
    # Even a cookie signed with the server's own secret for the native session's id is refused:
    # the session-use script will not serve a native record to a cookie path.
    signer = Signer(settings_for(redis_url, keys_dir).session_secret.value, salt="session-cookie")
    signed = signer.sign(parsed.session_id).decode()
    assert client.get("/me", headers={"Cookie": f"__Host-session={signed}"}).status_code == 401
    assert refresh(client, handle).status_code == 200


def test_idle_and_absolute_timeouts_end_native_sessions(client: TestClient, clock: FakeClock) -> None:
    idle = first_handle(client)
    clock.now += 1801
    assert error_of(refresh(client, idle)) == "invalid_grant"
    handle = first_handle(client)
    for _ in range(86400 // 1700):
        clock.now += 1700
        handle = rotated(client, handle)
    clock.now += 1700
    assert error_of(refresh(client, handle)) == "invalid_grant"


def test_native_logout_ends_the_session_and_revokes_its_tokens(client: TestClient) -> None:
    handle = first_handle(client)
    response = refresh(client, handle)
    token, current = response.json()["access_token"], response.json()["refresh_handle"]
    out = client.post("/native/logout", json={"refresh_handle": current})
    assert (out.status_code, out.json()) == (200, {"status": "logged_out"})
    assert error_of(refresh(client, current)) == "invalid_grant"
    sid = claims_of(token)[1]["sid"]
    _, feed_claims = claims_of(client.get("/.well-known/revocations.json").text)
    assert any(e["kind"] == "session" and e["id"] == sid for e in feed_claims["entries"])
    again = client.post("/native/logout", json={"refresh_handle": current})
    assert (again.status_code, error_of(again)) == (401, "invalid_grant")


def test_logout_with_a_rotated_away_handle_is_theft_and_still_ends_the_session(client: TestClient) -> None:
    old = first_handle(client)
    current = rotated(client, rotated(client, old))
    out = client.post("/native/logout", json={"refresh_handle": old})
    assert (out.status_code, error_of(out)) == (401, "refresh_reused")
    assert error_of(refresh(client, current)) == "invalid_grant"


@pytest.mark.parametrize("action", ["logout-all", "password", "admin", "delete", "disable"])
def test_browser_and_admin_actions_end_native_sessions(client: TestClient, action: str) -> None:
    handle = first_handle(client)
    browser = Session(client)
    if action == "logout-all":
        assert client.post("/logout-all", headers=browser.headers()).status_code == 204
    elif action == "password":
        change = {"current_password": DEMO_PASSWORD, "new_password": "a brand new password"}
        assert client.post("/password", json=change, headers=browser.headers()).status_code == 200
    elif action == "delete":
        listed = client.get("/sessions", headers=browser.headers()).json()["sessions"]
        native = next(s for s in listed if s["kind"] == "native")
        assert client.delete(f"/sessions/{native['handle']}", headers=browser.headers()).status_code == 204
    else:
        admin = Session(client, "admin@example.com")
        verb = "revoke-sessions" if action == "admin" else "disable"
        path = f"/admin/users/{browser.user['id']}/{verb}"
        assert client.post(path, headers=admin.headers()).status_code == 204
    assert error_of(refresh(client, handle)) == "invalid_grant"


def test_failed_refreshes_are_throttled_per_client_and_successes_are_free(make_client: Any) -> None:
    client = make_client(REFRESH_FAILURE_LIMIT="3")
    handle = first_handle(client)
    for _ in range(10):
        handle = rotated(client, handle)
    guesses = [refresh(client, f"{handle[:-3]}abc") for _ in range(3)]
    assert [error_of(g) for g in guesses] == ["refresh_reused", "invalid_grant", "invalid_grant"]
    throttled = refresh(client, "garbage")
    assert (throttled.status_code, error_of(throttled)) == (429, "too_many_requests")
    assert int(throttled.headers["retry-after"]) >= 1


def test_the_session_token_budget_applies_and_spares_the_handle(make_client: Any) -> None:
    client = make_client(TOKEN_RATE_LIMIT="2", NATIVE_REFRESH_GRACE_SECONDS="0")
    handle = rotated(client, rotated(client, first_handle(client)))
    busy = refresh(client, handle)
    assert (busy.status_code, error_of(busy)) == (429, "too_many_requests")
    # Not rotated while refused: it is still the session's current handle (a logout spends no budget).
    out = client.post("/native/logout", json={"refresh_handle": handle})
    assert (out.status_code, out.json()) == (200, {"status": "logged_out"})


def test_a_redis_dump_holds_no_handle(client: TestClient, redis_url: str) -> None:
    handle = first_handle(client)
    current = rotated(client, rotated(client, handle))
    parsed = [domain.read_refresh_handle(h) for h in (handle, current)]
    secrets_ = {p.secret for p in parsed if p} | {parsed[0].session_id.split(".")[1]}  # type: ignore[union-attr]
    dump = []
    with redis.Redis.from_url(redis_url) as raw:
        for key in raw.scan_iter(count=500):
            dump.append(key)
            if raw.type(key) == b"hash":
                dump.extend(v for pair in raw.hgetall(key).items() for v in pair)
            elif raw.type(key) == b"string":
                dump.append(raw.get(key) or b"")
    text = b"\n".join(dump)
    assert not any(secret.encode() in text for secret in secrets_)


def test_native_routes_over_a_real_socket_refuse_bad_bodies(redis_url: str, keys_dir: Path) -> None:
    app = create_app(settings_for(redis_url, keys_dir))
    with ServerThread(app, lifespan="on") as server, httpx.Client(base_url=server.url) as http:
        for body in (
            b"",
            b"[]",
            b'{"refresh_handle": 5, "audience": "orders"}',
            b'{"refresh_handle": "' + b"a" * 300 + b'", "audience": "orders"}',
        ):
            response = http.post("/native/token", content=body, headers={"Content-Type": "application/json"})
            assert 400 <= response.status_code < 500, response.text
            assert set(response.json()) >= {"error", "detail"}


def test_a_user_past_the_session_limit_loses_the_least_recently_used(
    make_client: Any, clock: FakeClock
) -> None:
    client = make_client(SESSIONS_PER_USER="3")
    oldest = first_handle(client)
    clock.now += 1
    browser = Session(client)
    sid = claims_of(browser.mint().json()["access_token"])[1]["sid"]
    clock.now += 1
    middle = first_handle(client)
    clock.now += 1
    # Used most recently now, though created first: it is not the one to go.
    oldest = rotated(client, oldest)
    clock.now += 1
    newest = first_handle(client)
    assert client.get("/me", headers={"Cookie": f"__Host-session={browser.cookie}"}).status_code == 401
    for handle in (oldest, middle, newest):
        assert refresh(client, handle).status_code == 200
    # The evicted session's tokens are revoked like a logout's.
    _, feed_claims = claims_of(client.get("/.well-known/revocations.json").text)
    assert any(e["kind"] == "session" and e["id"] == sid for e in feed_claims["entries"])
    # A client logging in over and over holds at most the limit, whatever it does.
    for _ in range(12):
        clock.now += 1
        first_handle(client)
    viewer = Session(client)
    listed = client.get("/sessions", headers={"Cookie": f"__Host-session={viewer.cookie}"}).json()["sessions"]
    assert len(listed) == 3
    assert sum(s["current"] for s in listed) == 1
