"""The auth app over HTTP with a real Redis: login, CSRF rules, tokens, logout, outages."""

from __future__ import annotations

import base64
import json
import statistics
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.testclient import TestClient

from deploy.processes import free_port
from deploy.redis_server import RedisServer
from services.auth.app import create_app
from services.auth.settings import DEMO_PASSWORD, Settings
from tests.support.polling import poll

ORIGIN = "http://localhost:8000"
SAME_ORIGIN = {"Origin": ORIGIN}


def settings_for(redis_url: str, keys_dir: Path, **overrides: str) -> Settings:
    env = {
        "APP_ENV": "dev",
        "REDIS_URL": redis_url,
        "AUTH_KEYS_DIR": str(keys_dir),
        "SESSION_SECRET": "integration-test-secret-that-is-long-enough",
        "PUBLIC_ORIGIN": ORIGIN,
        "TOKEN_ISSUER": ORIGIN,
        **overrides,
    }
    return Settings.from_env(env)


def wait_for_demo_users(client: TestClient) -> None:
    # Readiness, not a login attempt: failed logins while seeding would spend the login budgets.
    poll(lambda: client.get("/readyz").status_code == 200, within=10, what="the demo users being seeded")


@pytest.fixture
def client(redis_url: str, keys_dir: Path) -> Iterator[TestClient]:
    app = create_app(settings_for(redis_url, keys_dir))
    with TestClient(app, base_url="http://localhost:8001") as test_client:
        wait_for_demo_users(test_client)
        yield test_client


def login(
    client: TestClient, email: str = "alice@example.com", password: str = DEMO_PASSWORD, **kw: Any
) -> httpx.Response:
    headers = {**SAME_ORIGIN, **kw.pop("headers", {})}
    return client.post("/login", json={"email": email, "password": password}, headers=headers, **kw)


def session_cookie(response: httpx.Response) -> str:
    cookie = SimpleCookie(response.headers["set-cookie"])
    return cookie["__Host-session"].value


class Session:
    """A logged-in caller that sends its cookie by hand (httpx keeps Secure cookies off plain http)."""

    def __init__(self, client: TestClient, email: str = "alice@example.com"):
        response = login(client, email)
        assert response.status_code == 200, response.text
        self.client = client
        self.cookie = session_cookie(response)
        self.csrf = response.json()["csrf_token"]
        self.user = response.json()["user"]

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Cookie": f"__Host-session={self.cookie}", **SAME_ORIGIN, "X-CSRF-Token": self.csrf, **extra}

    def mint(self, audience: str = "orders", **headers: str) -> httpx.Response:
        return self.client.post("/token", json={"audience": audience}, headers=self.headers(**headers))


def claims_of(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


def test_login_sets_a_host_only_secure_httponly_strict_cookie(client: TestClient) -> None:
    response = login(client)
    assert response.status_code == 200
    raw = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in raw.split(";")}
    assert raw.startswith("__Host-session=")
    assert {"httponly", "secure", "path", "samesite"} <= attributes
    assert "samesite=strict" in raw.lower()
    assert "path=/" in raw.lower()
    assert "domain" not in attributes
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["user"]["email"] == "alice@example.com"
    assert body["user"]["role"] == "user"
    assert len(body["csrf_token"]) >= 32
    assert "password_hash" not in json.dumps(body)


@pytest.mark.argon2_cost
def test_wrong_password_and_unknown_email_look_the_same(client: TestClient) -> None:
    wrong = login(client, password="not-the-password")
    unknown = login(client, email="nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {"error": "invalid_credentials", "detail": "email or password is wrong"}
    )

    def median_seconds(email: str, password: str) -> float:
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            login(client, email=email, password=password)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    # Both paths do one argon2 verification; without the dummy hash the unknown email is ~100x faster.
    ratio = median_seconds("nobody@example.com", "x" * 20) / median_seconds("alice@example.com", "x" * 20)
    assert 0.3 < ratio < 3.0


def test_login_discards_a_presented_session_and_kills_it(client: TestClient) -> None:
    first = Session(client)
    second = login(client, headers={"Cookie": f"__Host-session={first.cookie}"})
    assert second.status_code == 200
    assert session_cookie(second) != first.cookie
    assert first.mint().status_code == 401


def test_token_is_an_rfc9068_access_token(client: TestClient) -> None:
    caller = Session(client)
    response = caller.mint()
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    header, claims = claims_of(body["access_token"])
    assert set(header) == {"alg", "kid", "typ"}
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert claims["iss"] == ORIGIN
    assert claims["aud"] == "orders"
    assert claims["sub"] == caller.user["id"]
    assert claims["exp"] == claims["iat"] + 300
    assert claims["nbf"] == claims["iat"]
    assert claims["role"] == "user"
    assert claims["client_id"]
    assert claims["sid"]
    assert claims["sid"] not in caller.cookie
    assert caller.mint().json()["access_token"] != body["access_token"]
    jwks = client.get("/.well-known/jwks.json").json()
    key = RSAKey.import_key(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    assert jwt.decode(body["access_token"], key, algorithms=["RS256"]).claims == claims


def test_token_refuses_cross_origin_and_missing_origin(client: TestClient) -> None:
    caller = Session(client)
    assert caller.mint(Origin="http://localhost:9000").json()["error"] == "cross_origin"
    assert caller.mint(Origin="http://127.0.0.1:8000").status_code == 403
    no_origin = {k: v for k, v in caller.headers().items() if k != "Origin"}
    response = client.post("/token", json={"audience": "orders"}, headers=no_origin)
    assert response.status_code == 403
    assert response.json()["error"] == "origin_required"
    cross_site = client.post(
        "/token", json={"audience": "orders"}, headers={**no_origin, "Sec-Fetch-Site": "same-site"}
    )
    assert cross_site.status_code == 403
    same_origin = client.post(
        "/token", json={"audience": "orders"}, headers={**no_origin, "Sec-Fetch-Site": "same-origin"}
    )
    assert same_origin.status_code == 200


def test_a_cross_origin_refusal_names_the_origin_to_open_the_demo_at(client: TestClient) -> None:
    refused = Session(client).mint(Origin="http://127.0.0.1:8000")
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "cross_origin",
        "detail": f"open the demo at {ORIGIN}; requests from other origins are refused",
    }


def test_token_requires_the_sessions_csrf_token(client: TestClient) -> None:
    caller = Session(client)
    other = Session(client, "admin@example.com")
    assert caller.mint(**{"X-CSRF-Token": other.csrf}).json()["error"] == "csrf_failed"
    headers = {k: v for k, v in caller.headers().items() if k != "X-CSRF-Token"}
    assert client.post("/token", json={"audience": "orders"}, headers=headers).status_code == 403


def test_token_audience_must_be_configured(client: TestClient) -> None:
    caller = Session(client)
    assert caller.mint("billing").json()["error"] == "invalid_audience"
    response = client.post("/token", json={"audience": "orders", "scope": "all"}, headers=caller.headers())
    assert response.status_code == 422


def test_garbage_and_forged_cookies_are_401(client: TestClient) -> None:
    caller = Session(client)
    session_id, _, signature = caller.cookie.rpartition(".")
    # Flip the id's last character to one it certainly is not (a fixed "A" matched 1 time in 64).
    tampered_id = session_id[:-1] + ("B" if session_id.endswith("A") else "A")
    for cookie in ("garbage", "", f"{session_id}.AAAA", f"{tampered_id}.{signature}", "a" * 3000):
        response = client.get("/me", headers={"Cookie": f"__Host-session={cookie}"})
        assert response.status_code == 401, cookie
        assert response.json()["error"] == "no_session"


def test_me_answers_from_the_session_and_slides_it(client: TestClient) -> None:
    caller = Session(client)
    response = client.get("/me", headers={"Cookie": f"__Host-session={caller.cookie}"})
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == caller.user
    assert body["csrf_token"] == caller.csrf
    assert body["session"]["expires_at"] - body["session"]["last_seen"] == 1800


def test_logout_stops_new_tokens_and_clears_the_cookie(client: TestClient) -> None:
    caller = Session(client)
    refused = client.post("/logout", headers={**caller.headers(), "Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert caller.mint().status_code == 200
    response = client.post("/logout", headers=caller.headers())
    assert response.status_code == 200
    assert "max-age=0" in response.headers["set-cookie"].lower()
    assert caller.mint().status_code == 401
    assert client.get("/me", headers={"Cookie": f"__Host-session={caller.cookie}"}).status_code == 401


def test_jwks_publishes_public_members_only_with_caching(client: TestClient) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.headers["cache-control"] == "public, max-age=300"
    for key in response.json()["keys"]:
        assert set(key) == {"kty", "n", "e", "kid", "alg", "use"}
    metadata = client.get("/.well-known/openid-configuration").json()
    assert metadata == {
        "issuer": ORIGIN,
        "jwks_uri": f"{ORIGIN}/.well-known/jwks.json",
        "revocations_uri": f"{ORIGIN}/.well-known/revocations.json",
    }


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"email": "a@b.c"}', "application/json", 422),
        (b"[1, 2]", "application/json", 400),
        (b'{"email": 1, "password": 2}', "application/json", 422),
        (b"email=a&password=b", "application/x-www-form-urlencoded", 415),
        (b'{"email": "a@b.c", "password": "' + b"x" * 100_000 + b'"}', "application/json", 413),
        (b'{"email": "a@b.c", "email": "d@e.f", "password": "x"}', "application/json", 400),
        (b'{"email": "\\ud800@example.com", "password": "x"}', "application/json", 422),
        (b'{"email": "alice@example.com", "password": "\\udfff"}', "application/json", 422),
    ],
)
def test_bad_login_input_is_a_json_4xx(
    client: TestClient, body: bytes, content_type: str, status: int
) -> None:
    response = client.post("/login", content=body, headers={"Content-Type": content_type, **SAME_ORIGIN})
    assert response.status_code == status
    assert set(response.json()) == {"error", "detail"}


def test_redis_down_gives_503_fast_and_recovers(tmp_path: Path, keys_dir: Path) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port(), persist=True)
    server.start()
    app = create_app(settings_for(server.url, keys_dir))
    try:
        with TestClient(app, base_url="http://localhost:8001") as client:
            wait_for_demo_users(client)
            caller = Session(client)
            server.stop()
            for request in (lambda: login(client), caller.mint, lambda: client.get("/readyz")):
                started = time.monotonic()
                response = request()
                assert time.monotonic() - started < 2.0
                assert response.status_code == 503
                assert "error" in response.json()
            server.start()
            # Sessions were on disk (AOF), and the app reconnects by itself.
            assert caller.mint().status_code == 200
            assert client.get("/readyz").status_code == 200
    finally:
        server.stop()


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_refused_request_does_not_slide_the_idle_timer(redis_url: str, keys_dir: Path) -> None:
    clock = FakeClock()
    app = create_app(settings_for(redis_url, keys_dir), clock=clock)
    with TestClient(app, base_url="http://localhost:8001") as client:
        wait_for_demo_users(client)
        caller = Session(client)
        clock.now += 1000
        assert caller.mint(**{"X-CSRF-Token": "wrong"}).status_code == 403
        clock.now += 1000
        # Idle since login: 2000 s > 1800 s, whatever forged requests arrived meanwhile.
        assert client.get("/me", headers={"Cookie": f"__Host-session={caller.cookie}"}).status_code == 401


def test_an_allowed_request_slides_the_idle_timer(redis_url: str, keys_dir: Path) -> None:
    clock = FakeClock()
    app = create_app(settings_for(redis_url, keys_dir), clock=clock)
    with TestClient(app, base_url="http://localhost:8001") as client:
        wait_for_demo_users(client)
        caller = Session(client)
        for _ in range(3):
            clock.now += 1000
            assert caller.mint().status_code == 200
        assert client.get("/me", headers={"Cookie": f"__Host-session={caller.cookie}"}).status_code == 200
