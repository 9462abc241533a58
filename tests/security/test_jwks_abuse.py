"""JWKS abuse: a real orders process whose issuer JWKS is a server the test controls and counts.

A flood of tokens with unknown ``kid`` values must not turn into a flood of JWKS fetches, and a
JWKS endpoint gone bad (huge, drip-fed, redirecting, garbage) must be cut off within the
configured bounds while the last good keys keep verifying tokens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from deploy.devcluster import Cluster, ClusterConfig
from tests.support.polling import poll

from .attacker_server import (
    AttackerServer,
    Behaviour,
    attacker_server,
    by_path,
    drip,
    huge,
    jwks,
    redirect,
    respond,
)
from .forge import assert_accepted, assert_rejected, b64, claims, forge, http

pytestmark = pytest.mark.e2e

JWKS_PATH = "/.well-known/jwks.json"
ATTACKER_PATH = "/attacker-jwks.json"
ISSUER_KID = "issuer-key-1"
ATTACKER_KID = "attacker-key-1"
FLOOD_COOLDOWN = 2.0
FETCH_TIMEOUT = 1.0


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
        "n": b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
    }


@pytest.fixture(scope="module")
def issuer_key() -> rsa.RSAPrivateKey:
    return _rsa_key()


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return _rsa_key()


@pytest.fixture(scope="module")
def good_jwks(issuer_key: rsa.RSAPrivateKey, attacker_key: rsa.RSAPrivateKey) -> Behaviour:
    """The issuer's JWKS at its path; the attacker's keys one redirect away, where nothing may follow."""
    attacker_document = {
        "keys": [public_jwk(attacker_key, ATTACKER_KID), public_jwk(attacker_key, ISSUER_KID)]
    }
    return by_path(
        {
            JWKS_PATH: jwks({"keys": [public_jwk(issuer_key, ISSUER_KID)]}),
            ATTACKER_PATH: jwks(attacker_document),
        },
        respond(b'{"error":"not_found","detail":"no such path"}', status=404),
    )


@pytest.fixture(scope="module")
def issuer(good_jwks: Behaviour) -> Iterator[AttackerServer]:
    with attacker_server(good_jwks) as server:
        yield server


@contextmanager
def orders_trusting(server: AttackerServer, state_dir: Any, **env: str) -> Iterator[Cluster]:
    """A real orders process (and nothing else of the cluster) whose JWKS_URL is ``server``."""
    settings = {
        "JWKS_URL": server.url + JWKS_PATH,
        "JWKS_TIMEOUT_SECONDS": str(FETCH_TIMEOUT),
        # No scheduled refresh during the test: every fetch counted is one a token caused.
        "JWKS_REFRESH_SECONDS": "3600",
        **env,
    }
    cluster = Cluster(ClusterConfig.on_free_ports(state_dir, env=settings))
    cluster.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        cluster.start_service("orders")
        yield cluster
    finally:
        cluster.stop_service("orders")


def token(cluster: Cluster, key: rsa.RSAPrivateKey, kid: str) -> str:
    return forge({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims(cluster), key)


def call(cluster: Cluster, bearer: str) -> Any:
    return http().get(
        f"{cluster.service_url('orders')}/orders", headers={"Authorization": f"Bearer {bearer}"}
    )


def readiness(cluster: Cluster) -> dict[str, Any]:
    response = http().get(f"{cluster.service_url('orders')}/readyz")
    body: dict[str, Any] = response.json()
    assert response.status_code == 200, body
    return body


def test_a_flood_of_unknown_kids_costs_at_most_one_fetch_per_cooldown(
    issuer: AttackerServer, issuer_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with orders_trusting(
        issuer, tmp_path_factory.mktemp("flood"), JWKS_REFETCH_COOLDOWN_SECONDS=str(FLOOD_COOLDOWN)
    ) as orders:
        # Let the start-up fetch leave the cooldown window, so the flood's first miss may fetch once.
        poll(
            lambda: readiness(orders)["checks"]["jwks"]["age_seconds"] >= FLOOD_COOLDOWN,
            within=FLOOD_COOLDOWN + 10,
            what="the JWKS cooldown to pass",
        )
        before = issuer.hits(JWKS_PATH)
        forged = [token(orders, issuer_key, uuid.uuid4().hex) for _ in range(60)]

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=12) as pool:
            responses = list(pool.map(lambda bearer: call(orders, bearer), forged))
        elapsed = time.monotonic() - started

        for response, bearer in zip(responses, forged, strict=True):
            assert_rejected(response, bearer)
        fetches = issuer.hits(JWKS_PATH) - before
        assert 1 <= fetches <= 1 + int(elapsed // FLOOD_COOLDOWN), (fetches, elapsed)
        assert_accepted(call(orders, token(orders, issuer_key, ISSUER_KID)))


@pytest.fixture(scope="module")
def orders(issuer: AttackerServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """orders refetching on every unknown kid (no cooldown), so each test's attack is delivered at once."""
    with orders_trusting(
        issuer, tmp_path_factory.mktemp("abuse"), JWKS_REFETCH_COOLDOWN_SECONDS="0"
    ) as started:
        yield started


@pytest.fixture
def abused(issuer: AttackerServer, good_jwks: Behaviour) -> Iterator[AttackerServer]:
    """The issuer server, restored to its good JWKS after the test however it was abused."""
    try:
        yield issuer
    finally:
        issuer.serve(good_jwks)


def attack(orders: Cluster, issuer: AttackerServer, behaviour: Behaviour, key: rsa.RSAPrivateKey) -> float:
    """Serve ``behaviour`` at the JWKS path, make orders fetch it with an unknown kid; the seconds it took."""
    issuer.serve(by_path({JWKS_PATH: behaviour}, behaviour))
    before = issuer.hits(JWKS_PATH)
    bearer = token(orders, key, f"unknown-{uuid.uuid4().hex}")
    started = time.monotonic()
    response = call(orders, bearer)
    elapsed = time.monotonic() - started
    assert_rejected(response, bearer)
    assert issuer.hits(JWKS_PATH) == before + 1, "the attack never reached orders' JWKS fetch"
    return elapsed


def assert_last_good_keys_kept(orders: Cluster, key: rsa.RSAPrivateKey) -> None:
    assert_accepted(call(orders, token(orders, key, ISSUER_KID)))
    assert readiness(orders)["checks"]["jwks"]["ready"] is True


def test_control_orders_verifies_with_the_issuer_key(orders: Cluster, issuer_key: rsa.RSAPrivateKey) -> None:
    assert_accepted(call(orders, token(orders, issuer_key, ISSUER_KID)))


def test_control_an_unknown_kid_does_refetch(
    orders: Cluster, abused: AttackerServer, issuer_key: rsa.RSAPrivateKey, good_jwks: Behaviour
) -> None:
    # The good JWKS itself through the same attack path: fetched once, nothing lost.
    attack(orders, abused, good_jwks, issuer_key)

    assert_last_good_keys_kept(orders, issuer_key)


def test_huge_jwks_is_cut_off_at_the_byte_cap(
    orders: Cluster, abused: AttackerServer, issuer_key: rsa.RSAPrivateKey
) -> None:
    size = 32 * 1024 * 1024
    attack(orders, abused, huge(size), issuer_key)

    assert abused.answer_ended.wait(timeout=10), "orders kept reading the huge JWKS"
    # Loopback socket buffers absorb a few MiB; reading on to the end would take all 32.
    assert abused.body_bytes_sent < size // 2, abused.body_bytes_sent
    assert_last_good_keys_kept(orders, issuer_key)


def test_drip_fed_jwks_is_cut_off_at_the_timeout(
    orders: Cluster, abused: AttackerServer, issuer_key: rsa.RSAPrivateKey
) -> None:
    # A byte every 0.2 s keeps every read alive: only the overall fetch timeout ends it.
    elapsed = attack(orders, abused, drip(interval=0.2), issuer_key)

    assert elapsed < FETCH_TIMEOUT + 2.0, elapsed
    assert abused.answer_ended.wait(timeout=5), "orders never hung up on the drip-fed JWKS"
    assert_last_good_keys_kept(orders, issuer_key)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirecting_jwks_is_not_followed(
    orders: Cluster,
    abused: AttackerServer,
    issuer_key: rsa.RSAPrivateKey,
    attacker_key: rsa.RSAPrivateKey,
    good_jwks: Behaviour,
    status: int,
) -> None:
    before = abused.hits(ATTACKER_PATH)
    abused.serve(by_path({JWKS_PATH: redirect(abused.url + ATTACKER_PATH, status)}, good_jwks))
    bearer = token(orders, attacker_key, ATTACKER_KID)

    assert_rejected(call(orders, bearer), bearer)

    assert abused.hits(ATTACKER_PATH) == before, "orders followed the JWKS redirect"
    assert_last_good_keys_kept(orders, issuer_key)


GARBAGE = [
    pytest.param(respond(b"<html>maintenance</html>", content_type="text/html"), id="HTML"),
    pytest.param(respond(b"not json"), id="not JSON"),
    pytest.param(respond(b'{"keys": "all of them"}'), id="keys not a list"),
    pytest.param(respond(b'{"keys": []}'), id="no keys"),
    pytest.param(respond(b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]}'), id="only an HMAC key"),
    pytest.param(
        respond(b'{"keys": [1, null, "x", {"kty": "RSA", "n": "!", "e": "AQAB", "kid": "x"}]}'), id="junk"
    ),
    pytest.param(respond(b'{"keys": [], "keys": []}'), id="duplicate members"),
    pytest.param(respond(b"[" * 50_000 + b"]" * 10_000), id="deeply nested"),
    pytest.param(respond(b'{"keys": [NaN]}'), id="NaN"),
    pytest.param(respond(b"\xff\xfe\x00"), id="not UTF-8"),
    pytest.param(respond(b""), id="empty body"),
    pytest.param(respond(b'{"error": "boom"}', status=500), id="HTTP 500"),
    pytest.param(respond(b"", status=404), id="HTTP 404"),
]


@pytest.mark.parametrize("behaviour", GARBAGE)
def test_garbage_jwks_keeps_the_last_good_keys(
    orders: Cluster, abused: AttackerServer, issuer_key: rsa.RSAPrivateKey, behaviour: Behaviour
) -> None:
    attack(orders, abused, behaviour, issuer_key)

    assert_last_good_keys_kept(orders, issuer_key)


@pytest.mark.parametrize(
    ("bits", "overrides"),
    [
        pytest.param(1024, {}, id="1024-bit RSA"),
        pytest.param(2048, {"use": "enc"}, id="use enc"),
        pytest.param(2048, {"alg": "RS512"}, id="alg RS512"),
    ],
)
def test_an_unusable_key_offered_beside_the_good_one_is_not_trusted(
    orders: Cluster,
    abused: AttackerServer,
    issuer_key: rsa.RSAPrivateKey,
    bits: int,
    overrides: dict[str, str],
) -> None:
    unusable = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    document = {
        "keys": [public_jwk(issuer_key, ISSUER_KID), {**public_jwk(unusable, "unusable"), **overrides}]
    }
    attack(orders, abused, jwks(document), issuer_key)

    forged = token(orders, unusable, "unusable")
    assert_rejected(call(orders, forged), forged)
    assert_last_good_keys_kept(orders, issuer_key)


def test_a_jwks_that_swaps_in_the_attacker_key_under_a_new_kid_is_only_trusted_for_that_kid(
    orders: Cluster, abused: AttackerServer, issuer_key: rsa.RSAPrivateKey, attacker_key: rsa.RSAPrivateKey
) -> None:
    # The control that the cache really replaces keys on a good fetch: the counts above are meaningful.
    document = {"keys": [public_jwk(issuer_key, ISSUER_KID), public_jwk(attacker_key, "rotated-in")]}
    attack(orders, abused, jwks(document), issuer_key)

    assert_accepted(call(orders, token(orders, attacker_key, "rotated-in")))
    assert_accepted(call(orders, token(orders, issuer_key, ISSUER_KID)))
    forged = token(orders, attacker_key, ISSUER_KID)
    assert_rejected(call(orders, forged), forged)
