"""The revocation feed at the verifier: coverage per kind, verified-token memory, expiry, policy, settings.

Every test runs the real wiring (``open_verifier``: a JWKS cache and a revocation cache on one
httpx client) against a real HTTP issuer stand-in on loopback that long-polls like auth.
Attacks on the feed itself (forgeries, replays, redirects, oversized answers) are in
``tests/security/test_revocation_feed.py``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from joserfc.jwk import RSAKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from shared.core.errors import InvalidToken, ServiceUnavailable
from shared.core.settings import SettingsError
from shared.web.verifier import TokenVerifier, VerifierSettings, open_verifier
from tests.support.claims import ISSUER
from tests.support.feeds import FEED_PATH, JWKS_PATH, FeedServer, entry, eventually, feed_server, mint


@pytest.fixture
def issuer(key: RSAKey) -> Iterator[tuple[FeedServer, str]]:
    with feed_server(key) as pair:
        yield pair


def settings_for(url: str, **env: str) -> VerifierSettings:
    return VerifierSettings.from_env({"JWKS_URL": url + JWKS_PATH, "TOKEN_ISSUER": ISSUER, **env})


@asynccontextmanager
async def verifier_for(url: str, **env: str) -> AsyncIterator[TokenVerifier]:
    async with open_verifier(settings_for(url, **env), "orders") as verifier:
        yield verifier


async def revoke(server: FeedServer, verifier: TokenVerifier, *entries: dict[str, Any]) -> None:
    """Record ``entries`` at the issuer and wait until the verifier holds that version."""
    server.revoke(*entries)
    feed = verifier.revocations
    assert feed is not None
    await eventually(lambda: feed.version == server.version, what=f"feed version {server.version}")


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    return caught.value.reason


async def test_a_session_entry_refuses_that_sessions_tokens_issued_before_its_cutoff(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    cutoff = int(time.time()) - 5
    older = mint(key, age=6, sid="sid-1")
    at_cutoff = mint(key, age=5, sid="sid-1", jti="jti-2")
    other_session = mint(key, age=6, sid="sid-2", jti="jti-3")
    async with verifier_for(url) as verifier:
        await revoke(server, verifier, entry("session", "sid-1", cutoff))
        assert await refused(verifier, older) == "revoked"
        # iat < before covers; a token issued in the cutoff second itself was minted after the revocation.
        assert (await verifier.verify(at_cutoff)).sid == "sid-1"
        assert (await verifier.verify(other_session)).sid == "sid-2"
        assert verifier.rejected["revoked"] == 1


async def test_a_user_entry_refuses_every_session_of_that_user_and_no_other_user(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    async with verifier_for(url) as verifier:
        await revoke(server, verifier, entry("user", "user-1", int(time.time())))
        assert await refused(verifier, mint(key, sub="user-1", sid="sid-1")) == "revoked"
        assert await refused(verifier, mint(key, sub="user-1", sid="sid-9")) == "revoked"
        assert (await verifier.verify(mint(key, sub="user-2", sid="sid-2"))).sub == "user-2"


async def test_a_key_entry_refuses_every_token_that_key_signed_even_with_a_later_iat(
    issuer: tuple[FeedServer, str], key: RSAKey, second_key: RSAKey
) -> None:
    server, url = issuer
    server.published_keys = [key, second_key]
    async with verifier_for(url) as verifier:
        await revoke(server, verifier, entry("key", "key-2", int(time.time()) - 60))
        # Whoever holds a compromised key can mint tokens with any iat: the cutoff cannot protect.
        assert await refused(verifier, mint(second_key, age=0)) == "revoked"
        assert (await verifier.verify(mint(key, age=0))).sub == "user-1"


async def test_a_token_already_in_the_verified_memory_is_refused_once_an_entry_covers_it(
    issuer: tuple[FeedServer, str], key: RSAKey, second_key: RSAKey
) -> None:
    server, url = issuer
    server.published_keys = [key, second_key]
    by_session, by_key = mint(key, sid="sid-1"), mint(second_key, sid="sid-5")
    async with verifier_for(url) as verifier:
        for token in (by_session, by_key, by_session, by_key):
            await verifier.verify(token)
        assert verifier.cache_hits == 2
        await revoke(server, verifier, entry("session", "sid-1", int(time.time())))
        assert await refused(verifier, by_session) == "revoked"
        await revoke(server, verifier, entry("key", "key-2", int(time.time())))
        assert await refused(verifier, by_key) == "revoked"
        assert verifier.cache_hits == 2


async def test_entries_past_until_are_dropped_and_cover_nothing(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    now = int(time.time())
    async with verifier_for(url) as verifier:
        await revoke(
            server,
            verifier,
            entry("session", "sid-1", now, until=now - 1),
            entry("user", "user-1", now, until=now - 1),
            entry("session", "sid-2", now),
        )
        feed = verifier.revocations
        assert feed is not None
        assert feed.entry_count == 1
        assert (await verifier.verify(mint(key, sid="sid-1"))).sid == "sid-1"
        assert await refused(verifier, mint(key, sid="sid-2")) == "revoked"


async def test_a_feed_of_thousands_of_entries_is_checked_in_a_thread_and_applies(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    now = int(time.time())
    async with verifier_for(url) as verifier:
        await revoke(server, verifier, *(entry("session", f"sid-{i}", now) for i in range(3000)))
        assert len(server.body) > 64 * 1024, "the feed must be over the inline bound to take the thread path"
        assert await refused(verifier, mint(key, sid="sid-2999")) == "revoked"
        assert (await verifier.verify(mint(key, sid="sid-3000"))).sid == "sid-3000"


async def test_a_revocation_reaches_the_verifier_by_long_poll_well_within_a_second(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    async with verifier_for(url) as verifier:
        feed = verifier.revocations
        assert feed is not None
        await eventually(
            lambda: any(p.startswith("wait=") for p in server.prefer_headers), what="a long-poll"
        )
        started = time.monotonic()
        await revoke(server, verifier, entry("session", "sid-1", int(time.time()) + 1))
        # The bound is generous for a loaded machine; scripts/revocation_propagation.py measures it.
        assert time.monotonic() - started < 1.0
        assert feed.status()["fetches"] <= 4, "a held long-poll must not turn into a stream of requests"


async def test_a_feed_that_changed_before_the_ask_is_followed_at_once_by_a_held_ask(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    # A long refresh interval: only the long-poll path can deliver the changes in time.
    async with verifier_for(url, REVOCATIONS_REFRESH_SECONDS="30") as verifier:
        feed = verifier.revocations
        assert feed is not None
        now = int(time.time()) + 1
        for number in range(20):
            # Changes faster than one round trip: some asks find the feed already changed and are
            # answered at once, unheld; the verifier must not then wait out the refresh interval.
            server.revoke(entry("session", f"sid-{number}", now))
            await asyncio.sleep(0.002)
        started = time.monotonic()
        await eventually(lambda: feed.version == server.version, what=f"feed version {server.version}")
        assert time.monotonic() - started < 5.0
        assert await refused(verifier, mint(key, sid="sid-19")) == "revoked"


async def test_an_issuer_that_ignores_the_wait_preference_is_polled_on_the_interval(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    server.long_poll = False
    async with verifier_for(url, REVOCATIONS_REFRESH_SECONDS="0.2") as verifier:
        feed = verifier.revocations
        assert feed is not None
        await revoke(server, verifier, entry("session", "sid-1", int(time.time())))
        fetches = feed.fetch_count
        await asyncio.sleep(1.0)
        # About five polls a second at 0.2 s; a loop that spun would have made hundreds.
        assert 2 <= feed.fetch_count - fetches <= 8
        assert await refused(verifier, mint(key, sid="sid-1")) == "revoked"


def failing(status: int) -> Callable[[Request], Response]:
    def answer(request: Request) -> Response:
        return JSONResponse({"error": "down"}, status_code=status)

    return answer


async def test_a_stale_feed_fails_closed_with_503_for_every_token_and_recovers(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    policy = {
        "REVOCATIONS_MAX_STALE_SECONDS": "1.5",
        "REVOCATIONS_WAIT_SECONDS": "0",
        "REVOCATIONS_TIMEOUT_SECONDS": "0.5",
    }
    token = mint(key)
    async with verifier_for(url, REVOCATIONS_REFRESH_SECONDS="0.1", **policy) as verifier:
        feed = verifier.revocations
        assert feed is not None
        await verifier.verify(token)
        server.override = failing(500)
        await eventually(lambda: not feed.ready, what="the feed going stale")
        status = feed.status()
        assert status["ready"] is False
        assert "no successful refresh" in status["reason"]
        assert status["failures"]["status"] >= 1
        # Even the remembered token: a stale view cannot tell whether it has been revoked since.
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(token)
        assert verifier.unavailable_count == 1
        server.override = None
        await eventually(lambda: feed.ready, what="the feed recovering")
        assert (await verifier.verify(token)).sub == "user-1"


async def test_a_stale_feed_keeps_verifying_with_the_last_entries_when_failing_open(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    policy = {
        "REVOCATIONS_MAX_STALE_SECONDS": "1.5",
        "REVOCATIONS_WAIT_SECONDS": "0",
        "REVOCATIONS_TIMEOUT_SECONDS": "0.5",
    }
    async with verifier_for(
        url, REVOCATIONS_FAIL_CLOSED="false", REVOCATIONS_REFRESH_SECONDS="0.1", **policy
    ) as verifier:
        feed = verifier.revocations
        assert feed is not None
        await revoke(server, verifier, entry("session", "sid-1", int(time.time())))
        server.override = failing(503)
        await eventually(lambda: not feed.ready, what="the feed going stale")
        assert (await verifier.verify(mint(key, sid="sid-2"))).sid == "sid-2"
        # The last good entries still apply.
        assert await refused(verifier, mint(key, sid="sid-1")) == "revoked"


async def test_a_404_before_any_feed_means_the_issuer_publishes_none_and_is_no_outage(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    server.override = failing(404)
    async with verifier_for(
        url, REVOCATIONS_MAX_STALE_SECONDS="25", REVOCATIONS_WAIT_SECONDS="1"
    ) as verifier:
        feed = verifier.revocations
        assert feed is not None
        assert feed.ready
        assert feed.status()["published"] is False
        assert (await verifier.verify(mint(key))).sub == "user-1"
        # Once the issuer starts publishing, the verifier picks the feed up.
        server.override = None
        await revoke(server, verifier, entry("session", "sid-1", int(time.time())))
        assert feed.status()["published"] is True
        # ...and a feed once published cannot be withdrawn by answering 404.
        server.override = failing(404)
        await eventually(lambda: feed.failures["status"] >= 1, what="the 404 counted as a failure")
        assert await refused(verifier, mint(key, sid="sid-1")) == "revoked"


async def test_a_verifier_starting_while_the_feed_is_down_counts_its_staleness_from_start(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    server.override = failing(500)
    policy = {
        "REVOCATIONS_MAX_STALE_SECONDS": "1.5",
        "REVOCATIONS_WAIT_SECONDS": "0",
        "REVOCATIONS_TIMEOUT_SECONDS": "0.5",
    }
    async with verifier_for(url, REVOCATIONS_REFRESH_SECONDS="0.1", **policy) as verifier:
        feed = verifier.revocations
        assert feed is not None
        assert feed.ready
        assert feed.version is None
        await verifier.verify(mint(key))
        await eventually(lambda: not feed.ready, what="the never-loaded feed going stale")
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(mint(key, jti="jti-2"))


def test_the_feed_url_defaults_to_revocations_json_beside_each_jwks_url() -> None:
    settings = VerifierSettings.from_env(
        {"JWKS_URL": "http://auth-1:8001/.well-known/jwks.json,https://auth-2/keys/jwks.json?x=1"}
    )
    assert settings.revocations is not None
    assert settings.revocations.urls == (
        "http://auth-1:8001/.well-known/revocations.json",
        "https://auth-2/keys/revocations.json",
    )
    assert settings.revocations.fail_closed is True
    explicit = VerifierSettings.from_env({"REVOCATIONS_URL": "http://feed:1/r.json"})
    assert explicit.revocations is not None
    assert explicit.revocations.urls == ("http://feed:1/r.json",)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REVOCATIONS_URL": "file:///etc/passwd"}, "REVOCATIONS_URL"),
        ({"REVOCATIONS_WAIT_SECONDS": "31"}, "REVOCATIONS_WAIT_SECONDS"),
        ({"REVOCATIONS_MAX_STALE_SECONDS": "20"}, "REVOCATIONS_MAX_STALE_SECONDS"),
        ({"REVOCATIONS_FAIL_CLOSED": "maybe"}, "REVOCATIONS_FAIL_CLOSED"),
        ({"REVOCATIONS_MAX_BYTES": "10"}, "REVOCATIONS_MAX_BYTES"),
    ],
)
def test_bad_revocation_settings_fail_fast_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        VerifierSettings.from_env(env)


def test_the_feed_endpoint_of_the_stand_in_is_where_the_default_points() -> None:
    config = settings_for("http://h").revocations
    assert config is not None
    assert config.url == "http://h" + FEED_PATH


def test_the_gateway_refuses_a_revoked_token_before_proxying_and_reports_the_feed(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    server.revoke(entry("session", "sid-1", int(time.time())))
    # Both upstreams point at the stand-in: a refused token must never reach one.
    settings = GatewaySettings.from_env(
        {"AUTH_URL": url, "ORDERS_URL": url, "JWKS_URL": url + JWKS_PATH, "TOKEN_ISSUER": ISSUER}
    )
    with TestClient(create_gateway(settings)) as client:
        answer = client.get("/api/orders", headers={"Authorization": f"Bearer {mint(key, sid='sid-1')}"})
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_token"
        assert server.hits("/orders") == 0
        checks = client.get("/readyz").json()["checks"]
        assert checks["revocations"]["ready"] is True
        assert checks["revocations"]["audiences"]["orders"]["version"] == server.version
        assert 'revocations_entries{audience="orders"} 1.0' in client.get("/metrics").text


async def test_a_dead_feed_url_is_skipped_for_the_next_one_listed(
    issuer: tuple[FeedServer, str], key: RSAKey
) -> None:
    server, url = issuer
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}{FEED_PATH}"
    async with verifier_for(url, REVOCATIONS_URL=f"{dead},{url}{FEED_PATH}") as verifier:
        await revoke(server, verifier, entry("session", "sid-1", int(time.time())))
        assert await refused(verifier, mint(key, sid="sid-1")) == "revoked"
        feed = verifier.revocations
        assert feed is not None
        # The answering URL is asked first from then on: one failure in all, at start-up.
        assert feed.failures["network"] <= 1
