"""The revocation feed over HTTP with a real Redis: the signed set, conditional GETs, long-polls, recording."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from services.auth.app import create_app
from tests.integration.test_auth_app import Session, claims_of, settings_for, wait_for_demo_users

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
