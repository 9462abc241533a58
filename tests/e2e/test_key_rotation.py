"""Key rotation through the whole cluster: no failed request, removed keys fail, new kids in one refetch."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.support.cluster import ALICE, BOB, Browser, ClusterFactory, Secrets, sign_with_key
from tests.support.http import bearer, unverified_parts
from tests.support.polling import poll
from tests.support.revocation import feed_listing, read_feed

pytestmark = pytest.mark.e2e

# Short enough that two rotations and a removal fit in well under a minute. The schedule:
# publish lead = 0.2 reload + 2 max-age + 2 x 1 skew + 1 margin = 5.2 s;
# retired period = 30 TTL + 3 x 1 skew + 1 margin = 34 s.
FAST_ROTATION = {
    "ACCESS_TOKEN_TTL_SECONDS": "30",
    "TOKEN_LEEWAY_SECONDS": "1",
    "JWKS_MAX_AGE_SECONDS": "2",
    "KEYS_RELOAD_SECONDS": "0.2",
    "KEY_ROTATION_MARGIN_SECONDS": "1",
    # The load loop mints a token per request, far above the per-session budget meant for browsers.
    "TOKEN_RATE_LIMIT": "1000000",
}
# How long the client keeps a token and uses it again: most of its 30 s life.
TOKEN_REUSE_SECONDS = 25.0
# A revocation entry lives as long as a token it covers could: its lifetime + the largest leeway
# a verifier may allow (30 s, whatever this cluster's own leeway).
ENTRY_LIFETIME = 30 + 30


@pytest.fixture(scope="module")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    with cluster_factory("rotation", FAST_ROTATION) as started:
        yield started


@dataclass(frozen=True)
class Early:
    """A revocation made as the module starts, for its last test to see expire."""

    sid: str
    entry: dict[str, Any]


@pytest.fixture(scope="module", autouse=True)
def early(cluster: Cluster, secrets_seen: Secrets) -> Early:
    # Here rather than in test_revocation.py: this cluster's tokens live the shortest time auth
    # allows too, and the rotations below take most of the entry's minute, which that module,
    # about half a minute long, would spend waiting.
    with httpx.Client(base_url=cluster.url, timeout=10.0) as client:
        browser = Browser(cluster, client, secrets_seen)
        session = browser.login(BOB)
        sid = str(unverified_parts(browser.token(session))[1]["sid"])
        assert browser.logout(session).status_code == 200
    (entry,) = feed_listing(cluster.url, "session", sid).entries("session", sid)
    return Early(sid=sid, entry=entry)


def published_kids(cluster: Cluster) -> set[str]:
    response = httpx.get(f"{cluster.service_url('auth')}/.well-known/jwks.json", timeout=5)
    assert response.status_code == 200, response.text
    return {entry["kid"] for entry in response.json()["keys"]}


def rotate(cluster: Cluster) -> str:
    before = {path.stem for path in cluster.keys_dir.glob("*.pem")}
    result = cluster.auth_cli("keys", "rotate")
    assert result.returncode == 0, result.stderr
    (kid,) = {path.stem for path in cluster.keys_dir.glob("*.pem")} - before
    return kid


def fresh_claims(template: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time())
    return {**template, "iat": now, "nbf": now, "exp": now + 30, "jti": uuid.uuid4().hex}


@dataclass
class Load:
    """Clients that mint tokens and use them, fresh and old, through the gateway until stopped."""

    cluster: Cluster
    secrets: Secrets
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    kids_used: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, what: str, response: httpx.Response, expected: int = 200) -> None:
        with self.lock:
            self.requests += 1
            if response.status_code != expected:
                self.failures.append(f"{what}: {response.status_code} {response.text[:200]}")

    def run(self) -> None:
        with httpx.Client(base_url=self.cluster.url, timeout=10.0) as client:
            browser = Browser(self.cluster, client, self.secrets)
            session = browser.login(ALICE)
            kept: list[tuple[float, str]] = []
            while not self.stop.is_set():
                minted = browser.request_token(session)
                self.record("mint", minted)
                if minted.status_code != 200:
                    continue
                token = minted.json()["access_token"]
                with self.lock:
                    self.kids_used.add(unverified_parts(token)[0]["kid"])
                now = time.monotonic()
                kept = [(at, old) for at, old in kept if now - at < TOKEN_REUSE_SECONDS]
                kept.append((now, token))
                self.record("fresh token", client.get("/api/orders", headers=bearer(token)))
                # The oldest kept token was likely signed by a key that has since retired.
                self.record("old token", client.get("/api/orders", headers=bearer(kept[0][1])))


def test_two_rotations_under_load_fail_no_request_and_a_removed_key_then_stops_working(
    cluster: Cluster, secrets_seen: Secrets
) -> None:
    (first,) = published_kids(cluster)
    load = Load(cluster, secrets_seen)
    workers = [threading.Thread(target=load.run, name=f"load-{i}") for i in range(2)]
    for worker in workers:
        worker.start()
    try:
        poll(lambda: load.requests > 20, within=20, what="the load starting")
        template = unverified_parts(cluster_token(cluster, secrets_seen))[1]

        second = rotate(cluster)
        poll(lambda: second in load.kids_used, within=20, what="the second key signing")
        third = rotate(cluster)
        poll(lambda: third in load.kids_used, within=20, what="the third key signing")
        assert published_kids(cluster) == {first, second, third}

        # A token the first key signs now (as a thief of the retired key could) still passes while
        # the key is published, and fails once auth has removed it and the caches refreshed.
        stolen = sign_with_key(cluster, first, fresh_claims(template))
        assert httpx.get(f"{cluster.url}/api/orders", headers=bearer(stolen), timeout=10).status_code == 200
        poll(lambda: first not in published_kids(cluster), within=60, what="the first key's removal")
        assert published_kids(cluster) == {second, third}

        def rejected(url: str) -> bool:
            late = sign_with_key(cluster, first, fresh_claims(template))
            return httpx.get(url, headers=bearer(late), timeout=10).status_code == 401

        # Each verifier drops the key at its next refresh, within the 2 s max-age.
        poll(lambda: rejected(f"{cluster.url}/api/orders"), within=10, what="the gateway rejecting it")
        orders_url = f"{cluster.service_url('orders')}/orders"
        poll(lambda: rejected(orders_url), within=10, what="orders rejecting the removed key")
    finally:
        load.stop.set()
        for worker in workers:
            worker.join(timeout=30)

    print(f"rotation under load: {load.requests} requests, {len(load.failures)} failed")
    assert load.failures == []
    assert {first, second, third} <= load.kids_used
    assert load.requests > 100


def cluster_token(cluster: Cluster, secrets: Secrets) -> str:
    with httpx.Client(base_url=cluster.url, timeout=10.0) as client:
        browser = Browser(cluster, client, secrets)
        return browser.token(browser.login(ALICE))


def metric(cluster: Cluster, service: str, name: str, labels: str = "") -> float:
    """One sample from a service's own /metrics (0 when absent)."""
    text = httpx.get(f"{cluster.service_url(service)}/metrics", timeout=5).text
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


@pytest.fixture(scope="module")
def slow_cache_cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    """JWKS cached for the default five minutes, so only an unknown-kid refetch can find a new key."""
    with cluster_factory("new-kid", {"KEYS_RELOAD_SECONDS": "0.2"}) as started:
        yield started


def test_a_brand_new_key_is_accepted_after_exactly_one_refetch(
    slow_cache_cluster: Cluster, secrets_seen: Secrets
) -> None:
    cluster = slow_cache_cluster
    template = unverified_parts(cluster_token(cluster, secrets_seen))[1]
    labels = 'audience="orders"'
    refetches = metric(cluster, "orders", "jwks_unknown_kid_refetches_total", labels)
    fetches = metric(cluster, "orders", "jwks_fetches_total", f'{labels},result="success"')

    upcoming = rotate(cluster)
    poll(lambda: upcoming in published_kids(cluster), within=10, what="auth publishing the new key")
    # Signed by the next key, as a replica whose clock runs ahead would; orders has not seen it.
    token = sign_with_key(cluster, upcoming, fresh_claims(template))
    response = httpx.get(f"{cluster.service_url('orders')}/orders", headers=bearer(token), timeout=10)

    assert response.status_code == 200, response.text
    assert metric(cluster, "orders", "jwks_unknown_kid_refetches_total", labels) == refetches + 1
    assert metric(cluster, "auth", "auth_tokens_signed_total") >= 1
    assert metric(cluster, "auth", "auth_keys", 'state="next"') == 1
    ready = httpx.get(f"{cluster.service_url('auth')}/readyz", timeout=5).json()["checks"]["signing_keys"]
    assert ready["keys"][upcoming] == "next"
    withdrawn = cluster.auth_cli("keys", "retire", upcoming)
    assert withdrawn.returncode == 0, withdrawn.stderr
    assert metric(cluster, "orders", "jwks_fetches_total", f'{labels},result="success"') == fetches + 1
    again = httpx.get(f"{cluster.service_url('orders')}/orders", headers=bearer(token), timeout=10)
    assert again.status_code == 200
    assert metric(cluster, "orders", "jwks_unknown_kid_refetches_total", labels) == refetches + 1


def test_a_revocation_entry_leaves_the_feed_once_no_token_it_covers_can_be_valid(
    cluster: Cluster, early: Early
) -> None:
    """Last in the module, so most of the entry's minute has passed in the tests above."""
    assert early.entry["until"] == early.entry["before"] + ENTRY_LIFETIME
    poll(
        lambda: not read_feed(cluster.url).entries("session", early.sid),
        within=ENTRY_LIFETIME + 10,
        what="the early entry to expire",
        every=0.5,
    )
