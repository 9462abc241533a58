"""End-to-end fixtures: the whole cluster as real processes, and a client that behaves like a browser."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from deploy.devcluster import Cluster, ClusterConfig
from services.auth.key_store import load_keys

SESSION_COOKIE = "__Host-session"
ALICE = "alice@example.com"
ADMIN = "admin@example.com"
BOB = "bob@example.com"
BOB_PASSWORD = "bob-has-a-long-passphrase-too"

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


@dataclass(frozen=True)
class SetCookie:
    """One parsed ``Set-Cookie`` header: the value and the attributes, names lower-cased."""

    name: str
    value: str
    attributes: dict[str, str]


def session_cookie(response: httpx.Response) -> SetCookie:
    """The one ``__Host-session`` cookie the response sets."""
    found = [
        cookie
        for cookie in (parse_set_cookie(header) for header in response.headers.get_list("set-cookie"))
        if cookie.name == SESSION_COOKIE
    ]
    assert len(found) == 1, f"expected one {SESSION_COOKIE} cookie, got {len(found)}"
    return found[0]


def parse_set_cookie(header: str) -> SetCookie:
    pair, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = pair.partition("=")
    parsed = {}
    for attribute in attributes:
        key, _, attribute_value = attribute.partition("=")
        parsed[key.strip().lower()] = attribute_value.strip()
    return SetCookie(name=name.strip(), value=value.strip(), attributes=parsed)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the claims of a compact JWS, without checking anything."""
    header, payload, _ = token.split(".")
    return _b64_json(header), _b64_json(payload)


def _b64_json(segment: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return decoded


def sign_with_cluster_key(cluster: Cluster, claims: dict[str, Any]) -> str:
    """A token signed by the cluster's real active key, as only auth could make it."""
    kid = load_keys(cluster.keys_dir).active_kid(time.time())
    return sign_with_key(cluster, kid, claims)


def sign_with_key(cluster: Cluster, kid: str, claims: dict[str, Any]) -> str:
    """A token signed by one of the cluster's keys, whatever its state."""
    key = RSAKey.import_key((cluster.keys_dir / f"{kid}.pem").read_bytes())
    assert key.thumbprint() == kid
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, key, algorithms=["RS256"])


def assert_json_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is the shared error shape with ``status`` (and ``code`` when given)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    for member in ("error", "detail"):
        assert isinstance(body.get(member), str), body
        assert body[member], body
    if code is not None:
        assert body["error"] == code, body
    return body


def new_request_id() -> str:
    return f"e2e-{uuid.uuid4().hex}"


def wait_for_log_line(
    cluster: Cluster, service: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> dict[str, Any]:
    """The first JSON log line of ``service`` matching ``predicate``; output is pumped asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        for line in cluster.output(service):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and predicate(entry):
                return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching log line from {service} within {timeout} s")
        time.sleep(0.05)


def create_bob(cluster: Cluster) -> None:
    """A second ordinary user, created the way an operator would."""
    result = cluster.auth_cli("users", "add", BOB, "--role", "user", stdin=BOB_PASSWORD + "\n")
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> ClusterFactory:
    """Starts a cluster on free ports in its own directory and always stops it.

    ``auth_replicas=N`` runs N auth processes, ``auth-1`` ... ``auth-N``, behind the gateway.
    """

    @contextmanager
    def start(name: str, env: dict[str, str] | None = None, *, auth_replicas: int = 1) -> Iterator[Cluster]:
        state_dir = tmp_path_factory.mktemp(name)
        cluster = Cluster(ClusterConfig.on_free_ports(state_dir, env, auth_replicas=auth_replicas))
        try:
            cluster.start()
            create_bob(cluster)
            yield cluster
        finally:
            cluster.stop()

    return start


@pytest.fixture(scope="session")
def cluster(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    """One cluster shared by the modules that leave it running as they found it."""
    with cluster_factory("cluster") as started:
        yield started


@pytest.fixture(scope="session")
def secrets_seen() -> Secrets:
    return Secrets()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    """An HTTP client for the gateway at the public origin."""
    with httpx.Client(base_url=cluster.url, timeout=10.0) as http:
        yield http


@pytest.fixture
def browser(cluster: Cluster, client: httpx.Client, secrets_seen: Secrets) -> Browser:
    return Browser(cluster, client, secrets_seen)
