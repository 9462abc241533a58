"""Attacks on the session cookie, each named after the attack, against the running cluster.

Expiry needs a clock the test controls; a cluster process reads the real one, so those cases
run auth in process (``create_app(settings, clock=...)``, Starlette's TestClient) against the
cluster's own Redis, keys and session secret: real Redis, ASGI instead of a socket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from deploy.devcluster import Cluster
from services.auth.app import create_app
from services.auth.settings import Settings
from tests.security.session_helpers import PASSWORD, SessionApi, login, new_user
from tests.support.cluster import Browser, LoggedIn
from tests.support.http import SESSION_COOKIE, assert_json_error, session_cookie, unverified_parts

NEW_PASSWORD = "another-long-passphrase-2"


@pytest.fixture
def api(browser: Browser) -> SessionApi:
    return SessionApi(browser)


@pytest.fixture(scope="module")
def victim_email(cluster: Cluster) -> str:
    return new_user(cluster)


def _me(client: httpx.Client, cookie_headers: list[tuple[str, str]]) -> httpx.Response:
    return client.get("/auth/me", headers=cookie_headers)


# Fixation


@pytest.mark.parametrize("planted", ["attacker-chosen-id", "attacker-chosen-id.forged-signature", "A" * 43])
def test_fixation_a_planted_unsigned_cookie_is_never_adopted(
    browser: Browser, victim_email: str, planted: str
) -> None:
    session = login(browser, victim_email, Cookie=f"{SESSION_COOKIE}={planted}")
    assert planted not in session.cookie
    assert_json_error(_me(browser.client, [("Cookie", f"{SESSION_COOKIE}={planted}")]), 401, "no_session")


def test_fixation_the_attackers_own_session_planted_in_the_victims_browser_is_replaced_and_killed(
    cluster: Cluster, browser: Browser, api: SessionApi, victim_email: str
) -> None:
    attacker = login(browser, new_user(cluster))
    victim = login(browser, victim_email, Cookie=f"{SESSION_COOKIE}={attacker.cookie}")
    assert victim.cookie != attacker.cookie
    assert victim.user["email"] == victim_email
    # The planted id neither became the victim's session nor stays the attacker's.
    assert not api.is_live(attacker)
    assert api.me(victim).json()["user"]["email"] == victim_email


# Duplicated cookies (cookie tossing)


@pytest.fixture
def two_sessions(cluster: Cluster, browser: Browser, victim_email: str) -> tuple[LoggedIn, LoggedIn]:
    return login(browser, victim_email), login(browser, new_user(cluster))


@pytest.mark.parametrize("victim_first", [True, False], ids=["victim-first", "attacker-first"])
def test_cookie_tossing_two_session_cookies_in_one_header_are_refused(
    browser: Browser, api: SessionApi, two_sessions: tuple[LoggedIn, LoggedIn], victim_first: bool
) -> None:
    victim, attacker = two_sessions
    first, second = (victim, attacker) if victim_first else (attacker, victim)
    cookies = f"{SESSION_COOKIE}={first.cookie}; theme=dark; {SESSION_COOKIE}={second.cookie}"
    assert_json_error(_me(browser.client, [("Cookie", cookies)]), 401, "no_session")
    headers = {**browser.unsafe_headers(victim), "Cookie": cookies}
    minted = browser.client.post("/auth/token", json={"audience": "orders"}, headers=headers)
    assert_json_error(minted, 401, "no_session")
    # Refusing the ambiguous request harms neither session.
    assert api.is_live(victim)
    assert api.is_live(attacker)


@pytest.mark.parametrize("victim_first", [True, False], ids=["victim-first", "attacker-first"])
def test_cookie_tossing_two_cookie_headers_are_refused(
    browser: Browser, two_sessions: tuple[LoggedIn, LoggedIn], victim_first: bool
) -> None:
    victim, attacker = two_sessions
    first, second = (victim, attacker) if victim_first else (attacker, victim)
    headers = [("Cookie", f"{SESSION_COOKIE}={session.cookie}") for session in (first, second)]
    assert_json_error(_me(browser.client, headers), 401, "no_session")


def test_cookie_tossing_the_same_cookie_twice_is_refused(
    browser: Browser, two_sessions: tuple[LoggedIn, LoggedIn]
) -> None:
    victim, _ = two_sessions
    cookies = f"{SESSION_COOKIE}={victim.cookie}; {SESSION_COOKIE}={victim.cookie}"
    assert_json_error(_me(browser.client, [("Cookie", cookies)]), 401, "no_session")


def test_cookie_tossing_a_garbage_second_cookie_still_makes_the_request_ambiguous(
    browser: Browser, two_sessions: tuple[LoggedIn, LoggedIn]
) -> None:
    victim, _ = two_sessions
    for cookies in (
        f"{SESSION_COOKIE}=garbage; {SESSION_COOKIE}={victim.cookie}",
        f"{SESSION_COOKIE}={victim.cookie}; {SESSION_COOKIE}=",
    ):
        assert_json_error(_me(browser.client, [("Cookie", cookies)]), 401, "no_session")


@pytest.mark.parametrize(
    "name", ["session", "__host-session", "__HOST-session", "__Host-session2", "__Secure-session"]
)
def test_cookie_tossing_look_alike_cookie_names_are_ignored(
    browser: Browser, two_sessions: tuple[LoggedIn, LoggedIn], name: str
) -> None:
    # A subdomain or a plain-http page can set these; only a __Host- cookie is bound to this host.
    victim, _ = two_sessions
    assert_json_error(_me(browser.client, [("Cookie", f"{name}={victim.cookie}")]), 401, "no_session")


def test_a_single_session_cookie_beside_other_cookies_still_works(
    browser: Browser, two_sessions: tuple[LoggedIn, LoggedIn]
) -> None:
    victim, _ = two_sessions
    cookies = f"theme=dark; session=other; {SESSION_COOKIE}={victim.cookie}; lang=en"
    assert _me(browser.client, [("Cookie", cookies)]).status_code == 200


# Session ids in URLs


@pytest.mark.parametrize(
    "path",
    [
        "/auth/me?{name}={cookie}",
        "/auth/me?session={cookie}",
        "/auth/me?sid={cookie}",
        "/auth/me;{name}={cookie}",
        "/auth/me/{cookie}",
        "/auth/sessions?{name}={cookie}",
    ],
)
def test_session_id_in_the_url_is_ignored(
    browser: Browser, two_sessions: tuple[LoggedIn, LoggedIn], path: str
) -> None:
    victim, _ = two_sessions
    url = path.format(name=SESSION_COOKIE, cookie=victim.cookie)
    response = browser.client.get(url)
    assert response.status_code in (401, 404), response.text
    assert "csrf_token" not in response.text


def test_session_id_in_the_query_cannot_mint_a_token(
    browser: Browser, two_sessions: tuple[LoggedIn, LoggedIn]
) -> None:
    victim, _ = two_sessions
    headers = {k: v for k, v in browser.unsafe_headers(victim).items() if k != "Cookie"}
    response = browser.client.post(
        f"/auth/token?{SESSION_COOKIE}={victim.cookie}", json={"audience": "orders"}, headers=headers
    )
    assert_json_error(response, 401, "no_session")


# Replay after the session ended


@dataclass(frozen=True)
class Ending:
    name: str

    def end(self, api: SessionApi, cluster: Cluster, session: LoggedIn, browser: Browser) -> None:
        if self.name == "logout":
            assert browser.logout(session).status_code == 200
        elif self.name == "logout-all":
            assert api.logout_all(session).status_code == 204
        elif self.name == "password-change":
            assert api.change_password(session, PASSWORD, NEW_PASSWORD).status_code == 200
        elif self.name == "revoke":
            assert api.revoke(session, api.current_handle(session)).status_code == 204
        elif self.name == "revoke-from-another-session":
            other = login(browser, session.email)
            assert api.revoke(other, api.current_handle(session)).status_code == 204
        elif self.name == "admin-revoke":
            admin = browser.login("admin@example.com")
            assert api.admin(admin, session.user["id"], "revoke-sessions").status_code == 204
        else:
            admin = browser.login("admin@example.com")
            assert api.admin(admin, session.user["id"], "disable").status_code == 204


ENDINGS = [
    Ending(name)
    for name in (
        "logout",
        "logout-all",
        "password-change",
        "revoke",
        "revoke-from-another-session",
        "admin-revoke",
        "admin-disable",
    )
]


@pytest.mark.parametrize("ending", ENDINGS, ids=lambda ending: ending.name)
def test_cookie_replay_after_the_session_ended_is_refused(
    cluster: Cluster, browser: Browser, api: SessionApi, ending: Ending
) -> None:
    session = login(browser, new_user(cluster))
    ending.end(api, cluster, session, browser)
    assert_json_error(api.me(session), 401, "no_session")
    assert_json_error(browser.request_token(session), 401, "no_session")
    listing = browser.client.get("/auth/sessions", headers={"Cookie": f"{SESSION_COOKIE}={session.cookie}"})
    assert_json_error(listing, 401, "no_session")
    assert_json_error(api.logout_all(session), 401, "no_session")


def test_csrf_token_replay_after_a_password_change_is_refused(
    cluster: Cluster, browser: Browser, api: SessionApi
) -> None:
    session = login(browser, new_user(cluster))
    response = api.change_password(session, PASSWORD, NEW_PASSWORD)
    renewed_cookie = session_cookie(response).value
    stale_csrf = LoggedIn(session.email, renewed_cookie, session.csrf_token, session.user)
    assert_json_error(browser.request_token(stale_csrf), 403, "csrf_failed")
    fresh = LoggedIn(session.email, renewed_cookie, response.json()["csrf_token"], session.user)
    assert browser.request_token(fresh).status_code == 200


# Idle and absolute expiry, with a controlled clock


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


IDLE, ABSOLUTE = 600, 1800


@pytest.fixture
def clocked(cluster: Cluster) -> Iterator[tuple[TestClient, Clock]]:
    """Auth in process, on the cluster's Redis, keys and secret, with a clock the test moves."""
    env = {
        **cluster.env_for("auth"),
        "SESSION_IDLE_TIMEOUT_SECONDS": str(IDLE),
        "SESSION_ABSOLUTE_TIMEOUT_SECONDS": str(ABSOLUTE),
    }
    clock = Clock()
    app = create_app(Settings.from_env(env), clock=clock)
    with TestClient(app, base_url=cluster.service_url("auth")) as test_client:
        yield test_client, clock


def _login_in_process(cluster: Cluster, app: TestClient, email: str) -> str:
    response = app.post(
        "/login", json={"email": email, "password": PASSWORD}, headers={"Origin": cluster.public_origin}
    )
    assert response.status_code == 200, response.text
    return response.headers["set-cookie"].split(";")[0]


def _redis(cluster: Cluster) -> redis.Redis:
    return redis.Redis.from_url(cluster.service_url("redis"), decode_responses=True)


def test_idle_expiry_a_session_unused_past_the_idle_timeout_is_dead_and_unindexed(
    cluster: Cluster, clocked: tuple[TestClient, Clock]
) -> None:
    app, clock = clocked
    email = new_user(cluster)
    idle_cookie, active_cookie = (
        _login_in_process(cluster, app, email),
        _login_in_process(cluster, app, email),
    )
    user_id = app.get("/me", headers={"Cookie": active_cookie}).json()["user"]["id"]
    clock.now += IDLE - 1
    assert app.get("/me", headers={"Cookie": active_cookie}).status_code == 200
    assert len(app.get("/sessions", headers={"Cookie": active_cookie}).json()["sessions"]) == 2
    clock.now += 2
    # Listing from the live session prunes the dead one from the index, though Redis still holds it.
    listed = app.get("/sessions", headers={"Cookie": active_cookie}).json()["sessions"]
    assert [s["current"] for s in listed] == [True]
    with _redis(cluster) as client:
        indexed = client.smembers(f"user-sessions:{{{user_id}}}")
    assert len(indexed) == 1
    assert app.get("/me", headers={"Cookie": idle_cookie}).status_code == 401
    # The idle timer slid for the session that was used.
    assert app.get("/me", headers={"Cookie": active_cookie}).status_code == 200


def test_idle_expiry_a_dead_session_cannot_mint_a_token(
    cluster: Cluster, clocked: tuple[TestClient, Clock]
) -> None:
    app, clock = clocked
    body = {"email": new_user(cluster), "password": PASSWORD}
    response = app.post("/login", json=body, headers={"Origin": cluster.public_origin})
    cookie, csrf = response.headers["set-cookie"].split(";")[0], response.json()["csrf_token"]
    clock.now += IDLE
    minted = app.post(
        "/token",
        json={"audience": "orders"},
        headers={"Cookie": cookie, "Origin": cluster.public_origin, "X-CSRF-Token": csrf},
    )
    assert minted.status_code == 401
    assert minted.json()["error"] == "no_session"


def test_absolute_expiry_ends_a_session_however_active(
    cluster: Cluster, clocked: tuple[TestClient, Clock]
) -> None:
    app, clock = clocked
    cookie = _login_in_process(cluster, app, new_user(cluster))
    logged_in_at, step = clock.now, IDLE - 100
    # Used well within the idle timeout, again and again, up to the last second of its life.
    while clock.now + step < logged_in_at + ABSOLUTE:
        clock.now += step
        assert app.get("/me", headers={"Cookie": cookie}).status_code == 200
    clock.now = logged_in_at + ABSOLUTE - 1
    assert app.get("/me", headers={"Cookie": cookie}).status_code == 200
    clock.now = logged_in_at + ABSOLUTE
    assert app.get("/me", headers={"Cookie": cookie}).status_code == 401


# Race: parallel token requests against logout


@dataclass(frozen=True)
class Attempt:
    started: float
    finished: float
    status: int
    iat: int | None


def test_race_parallel_token_requests_against_logout_mint_nothing_after_logout(
    cluster: Cluster, browser: Browser
) -> None:
    session = login(browser, new_user(cluster))
    workers, rounds = 8, 5
    start = threading.Barrier(workers + 1)
    attempts: list[Attempt] = []
    lock = threading.Lock()

    headers = browser.unsafe_headers(session)

    def mint_repeatedly() -> None:
        with httpx.Client(base_url=cluster.url, timeout=10) as http:
            start.wait()
            for _ in range(rounds):
                started = time.monotonic()
                response = http.post("/auth/token", json={"audience": "orders"}, headers=headers)
                finished = time.monotonic()
                iat = None
                if response.status_code == 200:
                    browser.secrets.add(response.json()["access_token"])
                    iat = int(unverified_parts(response.json()["access_token"])[1]["iat"])
                with lock:
                    attempts.append(Attempt(started, finished, response.status_code, iat))

    threads = [threading.Thread(target=mint_repeatedly) for _ in range(workers)]
    for thread in threads:
        thread.start()
    start.wait()
    logged_out = browser.logout(session)
    logout_done, logout_done_wall = time.monotonic(), time.time()
    for thread in threads:
        thread.join(timeout=30)
    assert logged_out.status_code == 200
    assert len(attempts) == workers * rounds
    assert {attempt.status for attempt in attempts} <= {200, 401}
    # Every request that started after logout returned was refused ...
    after = [attempt for attempt in attempts if attempt.started > logout_done]
    assert all(attempt.status == 401 for attempt in after), after
    # ... and every token was issued no later than logout's completion.
    assert all(attempt.iat <= int(logout_done_wall) for attempt in attempts if attempt.iat is not None)
    # The session is gone for good: a request started now fails too.
    assert_json_error(browser.request_token(session), 401, "no_session")
    assert_json_error(SessionApi(browser).me(session), 401, "no_session")
