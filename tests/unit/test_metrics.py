"""Verifier metrics in the Prometheus text format: verdicts by reason, fetch results, per-app registries."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from prometheus_client import Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

from shared.core import InvalidToken, ServiceUnavailable, TokenPolicy
from shared.web import JWKSCache, JWKSConfig, TokenVerifier, VerifierMetrics, build_app, new_registry
from tests.support.claims import ISSUER, NOW, claims

JWKS_URL = "http://127.0.0.1:8001/.well-known/jwks.json"


def public_jwk(key: RSAKey) -> dict[str, Any]:
    return {**key.as_dict(private=False), "kid": "key-1", "alg": "RS256", "use": "sig"}


def mint(key: RSAKey, *, kid: str = "key-1") -> str:
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims(), key, algorithms=["RS256"])


async def open_test_verifier(
    handler: Callable[[httpx.Request], httpx.Response],
) -> tuple[TokenVerifier, Callable[[], Awaitable[None]]]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    cache = JWKSCache(JWKSConfig(url=JWKS_URL, refresh_interval=3600, retry_interval=3600), client)
    await cache.start()

    async def close() -> None:
        await cache.aclose()
        await client.aclose()

    return TokenVerifier(TokenPolicy(ISSUER, "orders", leeway=10), cache, clock=lambda: NOW), close


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parsed = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return parsed


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "key-1"})


async def test_verdicts_and_fetches_are_counted_by_reason(key: RSAKey) -> None:
    failing = False

    def handle(request: httpx.Request) -> httpx.Response:
        if failing:
            return httpx.Response(500)
        return httpx.Response(200, json={"keys": [public_jwk(key)]})

    verifier, close = await open_test_verifier(handle)
    try:
        reused = mint(key)
        await verifier.verify(reused)
        await verifier.verify(reused)
        for token in ("not-a-token", mint(key, kid="key-9"), mint(key)[:-8] + "AAAAAAAA"):
            with contextlib.suppress(InvalidToken):
                await verifier.verify(token)
        failing = True
        await verifier.keys.refresh()
        registry = new_registry()
        registry.register(VerifierMetrics({"orders": verifier}))
        found = samples(generate_latest(registry).decode())
    finally:
        await close()

    orders = (("audience", "orders"),)
    assert found[("tokens_verified_total", orders)] == 2
    assert found[("tokens_verified_from_cache_total", orders)] == 1
    for reason in ("malformed", "unknown_kid", "signature"):
        assert found[("tokens_rejected_total", (("audience", "orders"), ("reason", reason)))] == 1
    assert found[("jwks_fetches_total", (("audience", "orders"), ("result", "success")))] == 2
    assert found[("jwks_fetches_total", (("audience", "orders"), ("result", "failure")))] == 1
    assert found[("jwks_unknown_kid_refetches_total", orders)] == 1
    assert found[("jwks_last_fetch_success", orders)] == 0
    assert found[("jwks_ready", orders)] == 1
    assert found[("jwks_keys", orders)] == 1
    assert ("process_cpu_seconds_total", ()) in found or ("python_info", ()) in found


async def test_a_verifier_without_keys_counts_503s_not_rejections(key: RSAKey) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    verifier, close = await open_test_verifier(handle)
    try:
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(mint(key))
    finally:
        await close()
    assert verifier.unavailable_count == 1
    assert not verifier.rejected
    assert verifier.status()["ready"] is False


def test_every_app_serves_its_own_registry_at_metrics() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {}

    async def ready(request: Any) -> dict[str, Any]:
        return {}

    first, second = new_registry(), new_registry()
    apps = [
        build_app([], lifespan=lifespan, readiness=ready, metrics=registry) for registry in (first, second)
    ]
    Counter("only_in_first", "a metric of the first app", registry=first).inc()
    with TestClient(apps[0]) as one, TestClient(apps[1]) as two:
        response = one.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "only_in_first_total 1.0" in response.text
        assert "only_in_first" not in two.get("/metrics").text
