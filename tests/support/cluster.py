"""The whole cluster as real processes, and a client that behaves like a browser on its public origin."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from deploy.devcluster import Cluster
from services.auth.domain import validate_new_account
from services.auth.key_store import load_keys
from services.auth.redis_client import connect
from services.auth.store import UserStore
from tests.support.hashing import cheap_hasher
from tests.support.http import SESSION_COOKIE, bearer, session_cookie
from tests.support.polling import poll

ALICE = "alice@example.com"
ADMIN = "admin@example.com"
BOB = "bob@example.com"
BOB_PASSWORD = "bob-has-a-long-passphrase-too"

# The accounts tests add carry a cheap argon2 hash. Auth verifies a password with the parameters
# stored in its hash, so logging in to these accounts costs a millisecond instead of ~100 ms and
# 64 MiB of a shared core each time; no test of them measures that cost. The demo users, which
# auth seeds itself, and every password a service hashes (a change, a reset) keep the real cost.
TEST_HASHER = cheap_hasher()

#: What the ``cluster_factory`` fixture gives: ``start(name, env=None, *, auth_replicas=1)``.
ClusterFactory = Callable[..., AbstractContextManager[Cluster]]


@dataclass(frozen=True)
class LoggedIn:
    """A browser session: the cookie auth set and the CSRF token it returned."""

    email: str
    cookie: str
    csrf_token: str
    user: dict[str, Any]


class Secrets:
    """Every secret the tests handled, so a test can prove that no service ever logged one."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: str) -> None:
        self.values.add(value)


class Browser:
    """Sends what a browser on the public origin sends to the gateway.

    httpx's cookie jar keeps ``Secure`` cookies off plain http, so the session cookie is read
    from ``Set-Cookie`` and sent back by hand, with the ``Origin`` and ``X-CSRF-Token`` that
    every cookie-authenticated unsafe request needs.
    """

    def __init__(self, cluster: Cluster, client: httpx.Client, secrets: Secrets):
        self.cluster = cluster
        self.client = client
        self.secrets = secrets

    def password_for(self, email: str) -> str:
        return BOB_PASSWORD if email == BOB else self.cluster.demo_password

    def post_login(self, email: str, password: str, headers: dict[str, str] | None = None) -> httpx.Response:
        self.secrets.add(password)
        return self.client.post(
            "/auth/login",
            json={"email": email, "password": password},
            headers={"Origin": self.cluster.public_origin, **(headers or {})},
        )

    def login(self, email: str = ALICE, *, headers: dict[str, str] | None = None) -> LoggedIn:
        response = self.post_login(email, self.password_for(email), headers)
        assert response.status_code == 200, response.text
        cookie = session_cookie(response)
        body = response.json()
        self.secrets.add(cookie.value)
        self.secrets.add(body["csrf_token"])
        return LoggedIn(email=email, cookie=cookie.value, csrf_token=body["csrf_token"], user=body["user"])

    def unsafe_headers(self, session: LoggedIn) -> dict[str, str]:
        """Cookie, Origin and CSRF token, as the SPA sends them on a POST."""
        return {
            "Cookie": f"{SESSION_COOKIE}={session.cookie}",
            "Origin": self.cluster.public_origin,
            "X-CSRF-Token": session.csrf_token,
        }

    def request_token(
        self, session: LoggedIn, *, audience: str = "orders", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        response = self.client.post(
            "/auth/token",
            json={"audience": audience},
            headers={**self.unsafe_headers(session), **(headers or {})},
        )
        if response.status_code == 200:
            self.secrets.add(response.json()["access_token"])
        return response

    def token(self, session: LoggedIn) -> str:
        response = self.request_token(session)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def logout(self, session: LoggedIn, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post("/auth/logout", headers={**self.unsafe_headers(session), **(headers or {})})

    def create_order(self, token: str, item: str = "tea", quantity: int = 1) -> dict[str, Any]:
        response = self.client.post(
            "/api/orders", json={"item": item, "quantity": quantity}, headers=bearer(token)
        )
        assert response.status_code == 201, response.text
        order: dict[str, Any] = response.json()
        return order


def sign_with_cluster_key(cluster: Cluster, claims: dict[str, Any]) -> str:
    """A token signed by the cluster's real active key, as only auth could make it."""
    kid = load_keys(cluster.keys_dir).active_kid(time.time())
    return sign_with_key(cluster, kid, claims)


def sign_with_key(cluster: Cluster, kid: str, claims: dict[str, Any]) -> str:
    """A token signed by one of the cluster's keys, whatever its state."""
    key = RSAKey.import_key((cluster.keys_dir / f"{kid}.pem").read_bytes())
    assert key.thumbprint() == kid
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, key, algorithms=["RS256"])


def new_request_id() -> str:
    return f"e2e-{uuid.uuid4().hex}"


def wait_for_log_line(
    cluster: Cluster, service: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> dict[str, Any]:
    """The first JSON log line of ``service`` matching ``predicate``; output is pumped asynchronously."""

    def first_match() -> dict[str, Any] | None:
        for line in cluster.output(service):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and predicate(entry):
                return entry
        return None

    return poll(first_match, within=timeout, what=f"a matching log line from {service}")


def add_user(cluster: Cluster, email: str, password: str, role: str = "user") -> None:
    """An account in the cluster's Redis, checked and stored as ``services.auth users add`` does,
    with a hash at :data:`TEST_HASHER`'s cost.

    In this process rather than by running the command line: a new interpreter importing auth
    took about 2 s of a loaded 2-core machine per account, and the security tier makes dozens.
    ``tests/integration/test_auth_cli.py`` runs the command itself, and the browser tier logs in
    to accounts it made, end to end.
    """
    email = validate_new_account(email, role, password)

    async def create() -> None:
        client = connect(cluster.service_url("redis"), 2.0)
        try:
            await UserStore(client).create(email, role, _cheap_hash(password))
        finally:
            await client.aclose()

    # A loop of its own in a thread of its own, so that an async test may call this too.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
        thread.submit(asyncio.run, create()).result()


@functools.cache
def _cheap_hash(password: str) -> str:
    # One hash per password: many accounts share a test password, and no test compares salts.
    return TEST_HASHER.hash(password)


def create_bob(cluster: Cluster) -> None:
    """A second ordinary user, added as an operator would."""
    add_user(cluster, BOB, BOB_PASSWORD)
