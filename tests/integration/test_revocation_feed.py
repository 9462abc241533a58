"""The revocation feed over HTTP with a real Redis: the signed set, conditional GETs, long-polls, records."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from deploy.redis_server import RedisServer
from services.auth.app import create_app
from services.auth.settings import DEMO_PASSWORD
from tests.integration.test_auth_app import Session, claims_of, settings_for, wait_for_demo_users
from tests.support.polling import poll

FEED = "/.well-known/revocations.json"


@pytest.fixture
def client(redis_url: str, keys_dir: Path) -> Iterator[TestClient]:
    app = create_app(settings_for(redis_url, keys_dir))
    with TestClient(app, base_url="http://localhost:8001") as test_client:
        wait_for_demo_users(test_client)
        yield test_client


def feed_of(client: TestClient, response: httpx.Response) -> tuple[dict[str, Any], dict[str, Any]]:
    """The feed's JWS header and payload, its signature checked against auth's own JWKS."""
    keys = KeySet.import_key_set(client.get("/.well-known/jwks.json").json())
    verified = jws.deserialize_compact(response.text, keys, algorithms=["RS256"])
    return verified.protected, json.loads(verified.payload)


def entries_of(client: TestClient) -> list[dict[str, Any]]:
    _, payload = feed_of(client, client.get(FEED))
    entries: list[dict[str, Any]] = payload["entries"]
    return entries


def test_the_feed_is_a_signed_jws_of_the_live_set_with_its_etag(client: TestClient) -> None:
    response = client.get(FEED)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/revocations+jwt"
    assert response.headers["cache-control"] == "public, max-age=1"
    assert response.headers["x-content-type-options"] == "nosniff"
    header, payload = feed_of(client, response)
    active = client.get("/.well-known/jwks.json").json()["keys"][0]["kid"]
    assert header == {"alg": "RS256", "kid": active, "typ": "revocations+jwt"}
    assert set(payload) == {"iss", "iat", "epoch", "version", "entries"}
    assert payload["iss"] == "http://localhost:8000"
    assert payload["entries"] == []
    assert abs(payload["iat"] - time.time()) < 5
    assert response.headers["etag"] == f'"{payload["epoch"]}.{payload["version"]}"'


def test_a_matching_if_none_match_gets_304_with_no_body(client: TestClient) -> None:
    etag = client.get(FEED).headers["etag"]
    response = client.get(FEED, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == "public, max-age=1"
    assert client.get(FEED, headers={"If-None-Match": '"other.1"'}).status_code == 200


def test_discovery_names_the_feed(client: TestClient) -> None:
    metadata = client.get("/.well-known/openid-configuration").json()
    assert metadata["revocations_uri"] == "http://localhost:8000/.well-known/revocations.json"


def test_logout_publishes_a_cutoff_for_its_session(client: TestClient) -> None:
    session = Session(client)
    token = session.mint().json()["access_token"]
    _, claims = claims_of(token)
    before_logout = client.get(FEED).headers["etag"]
    assert client.post("/logout", headers=session.headers()).status_code == 200
    after = time.time()
    response = client.get(FEED)
    assert response.headers["etag"] != before_logout
    (entry,) = feed_of(client, response)[1]["entries"]
    assert entry["kind"] == "session"
    assert entry["id"] == claims["sid"]
    assert claims["iat"] < entry["before"] <= math.floor(after) + 1
    assert entry["until"] == entry["before"] + 300 + 30


def entries_by_kind(client: TestClient, kind: str) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in entries_of(client) if entry["kind"] == kind}


def test_revoking_one_session_publishes_only_that_sessions_cutoff(client: TestClient) -> None:
    kept, ended = Session(client), Session(client)
    ended_sid = claims_of(ended.mint().json()["access_token"])[1]["sid"]
    kept_sid = claims_of(kept.mint().json()["access_token"])[1]["sid"]
    response = client.delete(f"/sessions/{ended_sid}", headers=kept.headers())
    assert response.status_code == 204
    assert set(entries_by_kind(client, "session")) == {ended_sid}
    assert kept_sid not in entries_by_kind(client, "session")
    assert entries_by_kind(client, "user") == {}


def test_logging_out_everywhere_publishes_a_cutoff_for_the_user(client: TestClient) -> None:
    session = Session(client)
    _, claims = claims_of(session.mint().json()["access_token"])
    assert client.post("/logout-all", headers=session.headers()).status_code == 204
    entry = entries_by_kind(client, "user")[claims["sub"]]
    assert claims["iat"] < entry["before"]
    assert entries_by_kind(client, "session") == {}


def test_a_password_change_cuts_off_every_other_session_but_not_the_renewed_one(client: TestClient) -> None:
    current, other = Session(client), Session(client)
    current_sid = claims_of(current.mint().json()["access_token"])[1]["sid"]
    other_sid = claims_of(other.mint().json()["access_token"])[1]["sid"]
    change = {"current_password": DEMO_PASSWORD, "new_password": "another-long-passphrase-1"}
    response = client.post("/password", json=change, headers=current.headers())
    assert response.status_code == 200, response.text
    assert set(entries_by_kind(client, "session")) == {other_sid}
    assert current_sid not in entries_by_kind(client, "session")
    assert entries_by_kind(client, "user") == {}


@pytest.mark.parametrize("action", ["revoke-sessions", "disable"])
def test_an_admins_revoke_or_disable_publishes_a_cutoff_for_the_user(client: TestClient, action: str) -> None:
    alice = Session(client)
    _, claims = claims_of(alice.mint().json()["access_token"])
    admin = Session(client, "admin@example.com")
    response = client.post(f"/admin/users/{claims['sub']}/{action}", headers=admin.headers())
    assert response.status_code == 204
    assert claims["iat"] < entries_by_kind(client, "user")[claims["sub"]]["before"]
    assert alice.mint().status_code == 401


def metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def held_long_polls(client: TestClient, count: int) -> None:
    poll(
        lambda: metric(client, "auth_revocation_waiters") == count, within=10, what=f"{count} held long-polls"
    )


def test_a_long_poll_wakes_when_another_instance_records(redis_url: str, keys_dir: Path) -> None:
    # Two instances sharing Redis, as AUTH_REPLICAS=2 runs them: one holds the wait, one logs out.
    with (
        TestClient(create_app(settings_for(redis_url, keys_dir)), base_url="http://localhost:8001") as one,
        TestClient(create_app(settings_for(redis_url, keys_dir)), base_url="http://localhost:8001") as other,
    ):
        wait_for_demo_users(one)
        wait_for_demo_users(other)
        session = Session(other)
        sid = claims_of(session.mint().json()["access_token"])[1]["sid"]
        etag = one.get(FEED).headers["etag"]
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(one.get, FEED, headers={"If-None-Match": etag, "Prefer": "wait=20"})
            held_long_polls(one, 1)
            assert other.post("/logout", headers=session.headers()).status_code == 200
            logged_out = time.monotonic()
            response = held.result(timeout=20)
            woke = time.monotonic()
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=20"
    assert response.headers["etag"] != etag
    assert [entry["id"] for entry in feed_of(other, response)[1]["entries"]] == [sid]
    # The other instance polls the version every 100 ms; generous for a loaded machine.
    assert woke - logged_out < 2.0


def test_a_long_poll_with_no_change_ends_in_304_after_the_wait(client: TestClient) -> None:
    etag = client.get(FEED).headers["etag"]
    started = time.monotonic()
    response = client.get(FEED, headers={"If-None-Match": etag, "Prefer": "wait=1"})
    assert response.status_code == 304
    assert response.headers["preference-applied"] == "wait=1"
    assert response.headers["etag"] == etag
    assert 0.9 <= time.monotonic() - started < 5


def test_past_the_bound_a_long_poll_is_answered_at_once_not_held(redis_url: str, keys_dir: Path) -> None:
    settings = settings_for(redis_url, keys_dir, REVOCATIONS_MAX_WAITERS="1")
    with TestClient(create_app(settings), base_url="http://localhost:8001") as client:
        wait_for_demo_users(client)
        etag = client.get(FEED).headers["etag"]
        wait = {"If-None-Match": etag, "Prefer": "wait=10"}
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(client.get, FEED, headers=wait)
            held_long_polls(client, 1)
            started = time.monotonic()
            refused = client.get(FEED, headers=wait)
            assert time.monotonic() - started < 2
            assert refused.status_code == 304
            # No Preference-Applied: the client knows it was not held and waits max-age.
            assert "preference-applied" not in refused.headers
            assert metric(client, "auth_revocation_waits_declined_total") == 1
            session = Session(client)
            assert client.post("/logout", headers=session.headers()).status_code == 200
            assert held.result(timeout=10).status_code == 200


def test_the_set_survives_an_auth_restart(redis_url: str, keys_dir: Path) -> None:
    settings = settings_for(redis_url, keys_dir)
    with TestClient(create_app(settings), base_url="http://localhost:8001") as first:
        wait_for_demo_users(first)
        session = Session(first)
        assert first.post("/logout-all", headers=session.headers()).status_code == 204
        before = first.get(FEED)
    with TestClient(create_app(settings), base_url="http://localhost:8001") as second:
        after = second.get(FEED)
        assert after.headers["etag"] == before.headers["etag"]
        assert feed_of(second, after)[1]["entries"] == feed_of(second, before)[1]["entries"] != []


def test_auth_records_again_what_a_redis_restart_without_its_data_forgot(
    tmp_path: Path, keys_dir: Path
) -> None:
    with RedisServer(tmp_path / "redis", persist=False) as server:
        settings = settings_for(server.url, keys_dir)
        with TestClient(create_app(settings), base_url="http://localhost:8001") as client:
            wait_for_demo_users(client)
            session = Session(client)
            sid = claims_of(session.mint().json()["access_token"])[1]["sid"]
            assert client.post("/logout", headers=session.headers()).status_code == 200
            _, held = feed_of(client, client.get(FEED))
            server.stop()
            server.start()

            def restored() -> dict[str, Any] | None:
                _, payload = feed_of(client, client.get(FEED))
                return payload if payload["epoch"] != held["epoch"] else None

            payload = poll(restored, within=15, what="the feed under a new epoch")
            assert payload["entries"] == held["entries"]
            assert [entry["id"] for entry in payload["entries"]] == [sid]
            assert payload["version"] >= 1
            assert metric(client, "auth_revocation_republished_total") == 1
