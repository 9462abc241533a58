"""Attacks on the revocation feed a verifier trusts: forged, replayed, redirected, oversized, mislabelled.

Each attack is served by a real HTTP issuer stand-in on loopback to a verifier opened by
``open_verifier``, after a good feed with one revocation was accepted. Every attack must be
refused as a failed refresh with its reason, while the verifier keeps the good feed: the
revoked token stays refused and other tokens stay accepted. A bad feed never becomes a 500 at
the service either.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from joserfc.jwk import RSAKey
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.testclient import TestClient

from services.orders.app import create_app
from services.orders.settings import OrdersSettings
from shared.core.errors import InvalidToken
from shared.web.revocations import RevocationCache
from shared.web.verifier import TokenVerifier, VerifierSettings, open_verifier
from tests.support.claims import ISSUER, b64
from tests.support.feeds import (
    JWKS_PATH,
    MEDIA_TYPE,
    FeedServer,
    entry,
    eventually,
    feed_server,
    mint,
    sign_feed,
)
from tests.support.polling import poll


@pytest.fixture(scope="module")
def impostor_key() -> RSAKey:
    """Not published, but claims the published key's kid."""
    return RSAKey.generate_key(2048, parameters={"kid": "key-1"})


@pytest.fixture
def issuer(key: RSAKey, second_key: RSAKey) -> Iterator[tuple[FeedServer, str]]:
    with feed_server(key) as (server, url):
        server.published_keys = [key, second_key]
        yield server, url


@asynccontextmanager
async def guarded(
    server: FeedServer, url: str, **env: str
) -> AsyncIterator[tuple[TokenVerifier, RevocationCache]]:
    """A verifier that has accepted a feed revoking session ``sid-1`` (version 2)."""
    settings = VerifierSettings.from_env(
        {"JWKS_URL": url + JWKS_PATH, "TOKEN_ISSUER": ISSUER, "REVOCATIONS_REFRESH_SECONDS": "0.1", **env}
    )
    async with open_verifier(settings, "orders") as verifier:
        feed = verifier.revocations
        assert feed is not None
        server.revoke(entry("session", "sid-1", int(time.time())))
        await eventually(lambda: feed.version == 2, what="the good feed")
        yield verifier, feed


async def still_guarding(verifier: TokenVerifier, feed: RevocationCache, key: RSAKey) -> None:
    assert feed.version == 2
    with pytest.raises(InvalidToken, match="invalid or expired") as caught:
        await verifier.verify(mint(key, sid="sid-1"))
    assert caught.value.reason == "revoked"
    assert (await verifier.verify(mint(key, sid="sid-2"))).sid == "sid-2"


async def attacked(server: FeedServer, feed: RevocationCache, body: str, reason: str) -> None:
    """Serve ``body`` as the next feed and wait until the verifier has refused it for ``reason``."""
    before = feed.failures[reason]
    server.publish(body, f'"attack-{time.monotonic()}"')
    await eventually(lambda: feed.failures[reason] > before, what=f"a refresh refused for {reason}")


def unsigned(feed: str) -> str:
    """``feed`` with its header swapped for ``alg: none`` (joserfc will not sign with it)."""
    header = b64(json.dumps({"alg": "none", "kid": "key-1", "typ": "revocations+jwt"}).encode())
    return header + "." + feed.split(".", 1)[1]


FORGERIES: dict[str, Callable[[FeedServer, RSAKey, RSAKey], str]] = {
    # Signed by a key that claims the published kid: an empty feed would un-revoke everyone.
    "signature": lambda server, key, impostor: sign_feed(impostor, server.next_payload()),
    "type": lambda server, key, impostor: sign_feed(key, server.next_payload(), typ="at+jwt"),
    "header": lambda server, key, impostor: sign_feed(key, server.next_payload(), jku="http://127.0.0.1:9/k"),
    "algorithm": lambda server, key, impostor: unsigned(sign_feed(key, server.next_payload())),
    "issuer": lambda server, key, impostor: sign_feed(key, server.next_payload(iss="http://attacker")),
    "malformed": lambda server, key, impostor: sign_feed(key, server.next_payload(version="3")),
}


@pytest.mark.parametrize("reason", sorted(FORGERIES))
async def test_a_forged_or_mislabelled_feed_is_refused_and_the_good_one_kept(
    issuer: tuple[FeedServer, str], key: RSAKey, impostor_key: RSAKey, reason: str
) -> None:
    server, url = issuer
    async with guarded(server, url) as (verifier, feed):
        body = FORGERIES[reason](server, key, impostor_key)
        if reason == "algorithm":
            # joserfc refuses to sign with "none"; the header is swapped onto a real signature.
            good = sign_feed(key, server.next_payload())
            body = (
                "eyJhbGciOiJub25lIiwia2lkIjoia2V5LTEiLCJ0eXAiOiJyZXZvY2F0aW9ucytqd3QifQ."
                + good.split(".", 1)[1]
            )
        await attacked(server, feed, body, reason)
        await still_guarding(verifier, feed, key)


async def test_a_feed_signed_by_a_key_it_does_not_know_is_refused(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    stranger = RSAKey.generate_key(2048, parameters={"kid": "key-9"})
    async with guarded(server, url) as (verifier, feed):
        await attacked(server, feed, sign_feed(stranger, server.next_payload()), "unknown_kid")
        await still_guarding(verifier, feed, key)


async def test_a_feed_signed_by_a_revoked_key_is_refused_even_when_it_carries_that_revocation(
    issuer: tuple[FeedServer, str], key: RSAKey, second_key: RSAKey
) -> None:
    server, url = issuer
    async with guarded(server, url) as (verifier, feed):
        # The held feed does not revoke key-2 yet: the new one names its own signer.
        revoked_signer = server.next_payload(entries=[entry("key", "key-2", int(time.time()))])
        await attacked(server, feed, sign_feed(second_key, revoked_signer), "revoked_kid")
        await still_guarding(verifier, feed, key)
        # Once the held feed revokes key-2, key-2 cannot sign the next one either.
        server.revoke(entry("key", "key-2", int(time.time())))
        await eventually(lambda: feed.version == 3, what="the key revocation")
        await attacked(server, feed, sign_feed(second_key, server.next_payload()), "revoked_kid")
        assert feed.version == 3


async def test_a_replayed_older_feed_is_refused(issuer: tuple[FeedServer, str], key: RSAKey) -> None:
    server, url = issuer
    async with guarded(server, url) as (verifier, feed):
        # Version 1 of the same epoch, genuinely signed: it lacks the sid-1 revocation.
        await attacked(server, feed, sign_feed(key, server.next_payload(version=1)), "replay")
        await still_guarding(verifier, feed, key)
        # Another epoch (the set recreated) must be newer than the one held.
        older_epoch = server.next_payload(epoch="another", version=99, iat=int(time.time()) - 3600)
        await attacked(server, feed, sign_feed(key, older_epoch), "replay")
        await still_guarding(verifier, feed, key)
        newer_epoch = server.next_payload(epoch="another", version=1, iat=int(time.time()) + 1)
        server.publish(sign_feed(key, newer_epoch), '"another.1"')
        await eventually(lambda: feed.version == 1, what="the newer epoch")


def redirect_to(target: str) -> Callable[[Request], Response]:
    return lambda request: RedirectResponse(target, status_code=302)


def oversized(request: Request) -> Response:
    return Response(b"a" * 4096, media_type=MEDIA_TYPE)


def oversized_undeclared(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"a" * 1024

    return StreamingResponse(chunks(), media_type=MEDIA_TYPE)


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("redirect", "redirect"),
        ("oversized", "too_large"),
        ("oversized_undeclared", "too_large"),
        ("json", "content_type"),
        ("html", "content_type"),
    ],
)
async def test_a_feed_answer_breaking_the_fetch_rules_is_refused(
    issuer: tuple[FeedServer, str], key: RSAKey, attack: str, reason: str
) -> None:
    server, url = issuer
    async with guarded(server, url, REVOCATIONS_MAX_BYTES="2048") as (verifier, feed):
        before = feed.failures[reason]
        server.override = {
            "redirect": redirect_to(url + "/elsewhere"),
            "oversized": oversized,
            "oversized_undeclared": oversized_undeclared,
            # The right body under the wrong label: a JSON or HTML answer is not a feed.
            "json": lambda request: Response(server.body, media_type="application/json"),
            "html": lambda request: Response(server.body, media_type="text/html"),
        }[attack]
        server.revoke()
        await eventually(lambda: feed.failures[reason] > before, what=f"a refresh refused for {reason}")
        assert server.hits("/elsewhere") == 0, "the verifier followed the feed's redirect"
        await still_guarding(verifier, feed, key)


def test_a_bad_feed_answer_never_turns_into_a_500_at_the_service(
    issuer: tuple[FeedServer, str], key: RSAKey, tmp_path: Path
) -> None:
    server, url = issuer
    server.revoke(entry("session", "sid-1", int(time.time())))
    settings = OrdersSettings.from_env(
        {
            "ORDERS_DB_PATH": str(tmp_path / "orders.sqlite3"),
            "JWKS_URL": url + JWKS_PATH,
            "TOKEN_ISSUER": ISSUER,
            "REVOCATIONS_REFRESH_SECONDS": "0.1",
            "REVOCATIONS_WAIT_SECONDS": "0",
            "REVOCATIONS_TIMEOUT_SECONDS": "0.5",
            "REVOCATIONS_MAX_STALE_SECONDS": "1",
        }
    )
    with TestClient(create_app(settings)) as client:
        revoked = client.get("/orders", headers={"Authorization": f"Bearer {mint(key, sid='sid-1')}"})
        assert revoked.status_code == 401
        assert revoked.json()["error"] == "invalid_token"
        assert revoked.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert (
            client.get("/orders", headers={"Authorization": f"Bearer {mint(key, sid='sid-2')}"}).status_code
            == 200
        )
        server.publish("not a feed at all", '"garbage"')
        ready = poll(
            lambda: client.get("/readyz"),
            until=lambda response: response.status_code == 503,
            within=10,
            what="the garbage feed making orders unready",
        )
        assert ready.json()["checks"]["revocations"]["reason"].startswith("no successful refresh")
        assert ready.json()["checks"]["revocations"]["failures"]["malformed"] >= 1
        answer = client.get("/orders", headers={"Authorization": f"Bearer {mint(key, sid='sid-2')}"})
        assert answer.status_code == 503
        assert answer.json()["error"] == "service_unavailable"
        metrics = client.get("/metrics").text
        assert 'tokens_rejected_total{audience="orders",reason="revoked"} 1.0' in metrics
        assert 'revocations_refresh_failures_total{audience="orders",reason="malformed"}' in metrics
        assert 'revocations_ready{audience="orders"} 0.0' in metrics
