"""Revocation as a client sees it: the signed feed read independently, and tokens polled until refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jws
from joserfc.jwk import KeySet

from deploy.devcluster import Cluster
from tests.support.http import assert_json_error, bearer
from tests.support.polling import poll
from tests.support.processes import descendants, tcp_remote_ports

FEED_PATH = "/.well-known/revocations.json"
FEED_TYPE = "application/revocations+jwt"
# The contract's bound on one propagation, generous for a loaded 2-core machine: the typical
# delay is about a second, and a test that measures it says so.
REFUSED_WITHIN = 5.0
# How often a test asks whether a token is refused yet: the resolution of the measured delay.
PROBE_EVERY = 0.02


@dataclass(frozen=True)
class Feed:
    """One verified answer of the revocation feed: its signing kid, claims and ETag."""

    kid: str
    claims: dict[str, Any]
    etag: str
    size: int

    def entries(self, kind: str, identifier: str) -> list[dict[str, Any]]:
        return [e for e in self.claims["entries"] if e["kind"] == kind and e["id"] == identifier]


def read_feed(base_url: str, *, jwks_base_url: str | None = None, timeout: float = 10.0) -> Feed:
    """The feed at ``base_url``, checked as a verifier in another language would check it.

    The signature is verified against the JWKS published beside it, with nothing but the
    documented format: a compact RS256 JWS whose header names its ``typ``.
    """
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        response = client.get(f"{base_url}{FEED_PATH}")
        assert response.status_code == 200, (response.status_code, response.text[:300])
        assert response.headers["content-type"] == FEED_TYPE, response.headers
        keys = client.get(f"{jwks_base_url or base_url}/.well-known/jwks.json").json()
    verified = jws.deserialize_compact(response.content, KeySet.import_key_set(keys), algorithms=["RS256"])
    header = verified.headers()
    assert set(header) == {"alg", "kid", "typ"}, header
    assert header["typ"] == "revocations+jwt", header
    claims: dict[str, Any] = json.loads(verified.payload)
    return Feed(kid=header["kid"], claims=claims, etag=response.headers["etag"], size=len(response.content))


def feed_listing(base_url: str, kind: str, identifier: str, *, within: float = 5.0) -> Feed:
    """The feed at ``base_url`` once it lists an entry for ``identifier``.

    With two auth replicas an operation lands on either and the other learns of it on its next
    look at Redis (every 100 ms), so the first read after an operation may come from one that has
    not looked yet.
    """
    return poll(
        lambda: read_feed(base_url),
        until=lambda feed: feed.entries(kind, identifier),
        within=within,
        what=f"a {kind} entry for {identifier} in the feed at {base_url}",
    )


def answers(cluster: Cluster, token: str, client: httpx.Client) -> dict[str, httpx.Response]:
    """What the gateway (``GET /api/orders``) and orders itself (``GET /orders``) answer ``token``."""
    return {
        "gateway": client.get(f"{cluster.url}/api/orders", headers=bearer(token)),
        "orders": client.get(f"{cluster.service_url('orders')}/orders", headers=bearer(token)),
    }


def assert_accepted(cluster: Cluster, *tokens: str) -> None:
    """Every token is accepted at the gateway and at orders."""
    with httpx.Client(timeout=10.0) as client:
        for token in tokens:
            for where, response in answers(cluster, token, client).items():
                assert response.status_code == 200, (where, response.status_code, response.text[:300])


def wait_until_refused(cluster: Cluster, tokens: Iterable[str], *, within: float = REFUSED_WITHIN) -> float:
    """Seconds until every token is refused with 401 ``invalid_token`` at both verifiers.

    Polled from the moment of the call, which a test makes right after the operation's answer.
    Once refused, a token must stay refused: a verifier that flips back fails here.
    """
    started = time.monotonic()
    pending = {(where, token) for token in tokens for where in ("gateway", "orders")}
    with httpx.Client(timeout=10.0) as client:

        def all_refused() -> bool:
            for token in {token for _, token in pending}:
                for where, response in answers(cluster, token, client).items():
                    if response.status_code == 401:
                        assert_json_error(response, 401, "invalid_token")
                        pending.discard((where, token))
                    else:
                        assert (where, token) in pending, f"{where} accepted a token it had refused"
                        assert response.status_code == 200, (where, response.status_code, response.text)
            return not pending

        poll(
            all_refused,
            within=within,
            what="the revoked tokens refused at the gateway and at orders",
            every=PROBE_EVERY,
        )
        elapsed = time.monotonic() - started
        # Refused everywhere at once, not one answer that happened to be a 401.
        for token in tokens:
            for where, response in answers(cluster, token, client).items():
                assert_json_error(response, 401, "invalid_token")
                assert "invalid_token" in response.headers.get("www-authenticate", ""), where
    return elapsed


@dataclass
class RedisWatch:
    """Which processes were seen holding a TCP connection to Redis, sampled in the background."""

    cluster: Cluster
    every: float = 0.05
    samples: int = 0
    connected: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        redis_port = self.cluster.config.port("redis")
        for name in ("orders", "gateway", *self.cluster.auth_replicas):
            pid = self.cluster.pid(name)
            if pid is None:
                continue
            for each in (pid, *descendants(pid)):
                if redis_port in tcp_remote_ports(each):
                    self.connected[name] = self.connected.get(name, 0) + 1
        self.samples += 1

    def run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def assert_verifiers_never_connected(self) -> None:
        """Orders and the gateway never held a Redis connection, while auth (the control) did."""
        assert self.samples >= 10, f"only {self.samples} samples of the processes' connections"
        assert any(name in self.connected for name in self.cluster.auth_replicas), (
            "auth was never seen connected to Redis: the watch sees nothing",
            self.connected,
        )
        assert "orders" not in self.connected, self.connected
        assert "gateway" not in self.connected, self.connected


@contextmanager
def watching_redis_connections(cluster: Cluster) -> Iterator[RedisWatch]:
    """Sample every process's connections while the body runs; the watch holds what was seen."""
    watch = RedisWatch(cluster)
    thread = threading.Thread(target=watch.run, name="redis-watch", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        watch._stop.set()
        thread.join(timeout=5)
        watch.sample()
