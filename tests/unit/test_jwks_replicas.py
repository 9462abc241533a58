"""A JWKS served by several issuer replicas: a verifier keeps its keys while any one of them answers."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from joserfc.jwk import RSAKey

from shared.core import SettingsError
from shared.web import JWKSCache, JWKSConfig, VerifierSettings

ONE = "http://127.0.0.1:9101/.well-known/jwks.json"
TWO = "http://127.0.0.1:9102/.well-known/jwks.json"
THREE = "http://127.0.0.1:9103/.well-known/jwks.json"

Behaviour = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "shared-key"})


def serving(key: RSAKey) -> Behaviour:
    body = json.dumps({"keys": [{**key.as_dict(private=False), "alg": "RS256", "use": "sig"}]}).encode()
    return lambda request: httpx.Response(200, content=body, headers={"Cache-Control": "max-age=300"})


def refusing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def maintenance(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"<html>maintenance</html>")


class Replicas:
    """Each URL answers as its behaviour says; every request is recorded."""

    def __init__(self, behaviours: dict[str, Behaviour]):
        self.behaviours = behaviours
        self.asked: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(str(request.url))
        return self.behaviours[str(request.url)](request)


def cache_for(replicas: Replicas, *urls: str) -> JWKSCache:
    config = JWKSConfig(url=urls[0], fallback_urls=urls[1:], refresh_interval=3600, retry_interval=3600)
    return JWKSCache(config, httpx.AsyncClient(transport=httpx.MockTransport(replicas.handle)))


async def test_a_dead_first_replica_is_skipped_and_the_next_fetch_starts_where_keys_came_from(
    key: RSAKey,
) -> None:
    replicas = Replicas({ONE: refusing, TWO: serving(key)})
    cache = cache_for(replicas, ONE, TWO)

    await cache.refresh()
    await cache.refresh()

    assert cache.ready
    assert set(cache.keys()) == {"shared-key"}
    assert replicas.asked == [ONE, TWO, TWO]


async def test_a_replica_serving_no_usable_keys_is_passed_over(key: RSAKey) -> None:
    replicas = Replicas({ONE: maintenance, TWO: refusing, THREE: serving(key)})
    cache = cache_for(replicas, ONE, TWO, THREE)

    await cache.refresh()

    assert set(cache.keys()) == {"shared-key"}
    assert replicas.asked == [ONE, TWO, THREE]


async def test_when_the_replica_that_answered_dies_the_others_are_asked(key: RSAKey) -> None:
    replicas = Replicas({ONE: serving(key), TWO: serving(key)})
    cache = cache_for(replicas, ONE, TWO)
    await cache.refresh()
    replicas.behaviours[ONE] = refusing

    await cache.refresh()

    assert cache.last_fetch_ok is True
    assert replicas.asked == [ONE, ONE, TWO]


async def test_with_every_replica_down_the_cached_keys_stay_and_the_error_names_each(key: RSAKey) -> None:
    replicas = Replicas({ONE: serving(key), TWO: refusing})
    cache = cache_for(replicas, ONE, TWO)
    await cache.refresh()
    replicas.behaviours[ONE] = maintenance

    await cache.refresh()

    status = cache.status()
    assert set(cache.keys()) == {"shared-key"}
    assert status["last_fetch_ok"] is False
    assert status["last_error"] == f"{ONE}: JWKS is not valid JSON; {TWO}: connection refused"


def test_jwks_url_may_list_several_urls() -> None:
    settings = VerifierSettings.from_env({"JWKS_URL": f"{ONE}, {TWO}"})

    assert settings.jwks.urls == (ONE, TWO)
    assert VerifierSettings.from_env({}).jwks.urls == ("http://127.0.0.1:8001/.well-known/jwks.json",)


@pytest.mark.parametrize("value", [f"{ONE},file:///etc/keys.json", "127.0.0.1:8001/jwks.json"])
def test_a_jwks_url_that_is_not_http_is_refused_by_name(value: str) -> None:
    with pytest.raises(SettingsError, match="JWKS_URL"):
        VerifierSettings.from_env({"JWKS_URL": value})
