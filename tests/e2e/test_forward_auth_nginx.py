"""Debian's real nginx, configured by deploy/nginx/forward-auth.conf, guards a plain ``http.server``
with the gateway's forward-auth verdicts: only a valid token for the audience gets through.

Everything runs on loopback: the cluster (auth, orders, gateway), nginx from its own temporary
prefix, and the standard library's file server standing in for a service the project did not
write. Whether a request reached that upstream is read from the upstream's own request log.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from deploy.devcluster import REPO_ROOT, Cluster
from deploy.processes import free_port
from services.auth.key_store import load_keys
from tests.support.cluster import ALICE, Browser, ClusterFactory, Secrets, sign_with_cluster_key
from tests.support.http import bearer, unverified_parts
from tests.support.nginx import RequestLog, nginx, nginx_binary, plain_upstream
from tests.support.polling import poll

NGINX = nginx_binary()
EXAMPLE = REPO_ROOT / "deploy" / "nginx" / "forward-auth.conf"
AUDIENCE = "wiki"
PAGE = "the wiki's front page\n"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        NGINX is None,
        reason="Debian's nginx is not installed (apt-get install -y nginx; .ci/run installs it)",
    ),
]


@dataclass(frozen=True)
class Stack:
    cluster: Cluster
    browser: Browser
    nginx_url: str
    upstream_url: str
    upstream_log: RequestLog


def _example_config(gateway: str, upstream: str, port: int) -> str:
    """The example file with its addresses replaced by this run's; each must be there exactly once."""
    text = EXAMPLE.read_text()
    for example, actual in (
        ("server 127.0.0.1:8000;", f"server {gateway};"),
        ("server 127.0.0.1:9000;", f"server {upstream};"),
        ("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};"),
    ):
        assert text.count(example) == 1, f"{EXAMPLE.name} no longer says {example!r}"
        text = text.replace(example, actual)
    return text


@pytest.fixture(scope="module")
def stack(cluster_factory: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert NGINX is not None
    env = {"FORWARD_AUTH_AUDIENCES": AUDIENCE, "TOKEN_AUDIENCES": f"orders,{AUDIENCE}"}
    work = tmp_path_factory.mktemp("forward-auth-nginx")
    site = work / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    port = free_port()
    with (
        cluster_factory("forward-auth", env) as cluster,
        plain_upstream(site, work / "upstream.log") as (upstream, log),
    ):
        gateway = f"127.0.0.1:{cluster.config.gateway_port}"
        with (
            nginx(NGINX, _example_config(gateway, upstream, port), port, work),
            httpx.Client(base_url=cluster.url, timeout=10.0) as client,
        ):
            browser = Browser(cluster, client, Secrets())
            yield Stack(cluster, browser, f"http://127.0.0.1:{port}", f"http://{upstream}", log)


def _token(browser: Browser, audience: str) -> str:
    response = browser.request_token(browser.login(ALICE), audience=audience)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _claims(cluster: Cluster, audience: str, *, issued_ago: int = 0) -> dict[str, Any]:
    now = int(time.time()) - issued_ago
    return {
        "iss": cluster.public_origin,
        "sub": "someone",
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "sid": uuid.uuid4().hex,
        "role": "admin",
    }


def _forged(cluster: Cluster) -> str:
    """A well-formed token for the audience under the real key's kid, signed by a key auth never had."""
    kid = load_keys(cluster.keys_dir).active_kid(time.time())
    forger = RSAKey.generate_key(2048)
    header = {"alg": "RS256", "kid": kid, "typ": "at+jwt"}
    return jwt.encode(header, _claims(cluster, AUDIENCE), forger, algorithms=["RS256"])


def _get(stack: Stack, headers: dict[str, str] | None = None) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """nginx's answer for ``/`` and the requests the upstream received meanwhile."""
    before = len(stack.upstream_log.entries())
    response = httpx.get(f"{stack.nginx_url}/", headers=headers, timeout=10.0)
    return response, stack.upstream_log.entries()[before:]


def _headers_of(entry: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in entry["headers"] if key == name]


def test_a_request_without_a_token_never_reaches_the_upstream(stack: Stack) -> None:
    response, reached = _get(stack)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert reached == []


@pytest.mark.parametrize("kind", ["forged", "expired", "wrong audience", "garbage"])
def test_a_bad_token_never_reaches_the_upstream(stack: Stack, kind: str) -> None:
    cluster = stack.cluster
    if kind == "forged":
        token = _forged(cluster)
    elif kind == "expired":
        token = sign_with_cluster_key(cluster, _claims(cluster, AUDIENCE, issued_ago=3600))
    elif kind == "wrong audience":
        # A real token, minted by auth for the user, but for orders.
        token = _token(stack.browser, "orders")
    else:
        token = "not.a.token"

    response, reached = _get(stack, bearer(token))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert PAGE not in response.text
    assert reached == []


def test_a_valid_token_reaches_the_upstream_with_the_verified_identity(stack: Stack) -> None:
    token = _token(stack.browser, AUDIENCE)
    _, claims = unverified_parts(token)

    response, reached = _get(stack, bearer(token))

    assert response.status_code == 200, response.text
    assert response.text == PAGE
    [entry] = reached
    assert _headers_of(entry, "x-auth-subject") == [claims["sub"]]
    assert _headers_of(entry, "x-auth-role") == [claims["role"]]
    assert _headers_of(entry, "x-auth-session") == [claims["sid"]]
    assert _headers_of(entry, "x-auth-audience") == [AUDIENCE]
    # The upstream gets the identity, never the token it could replay.
    assert _headers_of(entry, "authorization") == []


def test_identity_headers_the_client_sends_are_replaced_by_the_verified_ones(stack: Stack) -> None:
    token = _token(stack.browser, AUDIENCE)
    _, claims = unverified_parts(token)
    spoofed = {
        "X-Auth-Subject": "admin-user-id",
        "X-Auth-Role": "admin",
        "X-Auth-Session": "someone-elses-session",
        "X-Auth-Audience": "orders",
    }

    response, reached = _get(stack, {**spoofed, **bearer(token)})

    assert response.status_code == 200, response.text
    [entry] = reached
    assert _headers_of(entry, "x-auth-subject") == [claims["sub"]]
    assert _headers_of(entry, "x-auth-role") == [claims["role"]]
    assert _headers_of(entry, "x-auth-session") == [claims["sid"]]
    assert _headers_of(entry, "x-auth-audience") == [AUDIENCE]


def test_spoofed_identity_headers_without_a_token_reach_nothing(stack: Stack) -> None:
    response, reached = _get(stack, {"X-Auth-Subject": "admin-user-id", "X-Auth-Role": "admin"})

    assert response.status_code == 401
    assert reached == []


def test_the_upstream_itself_checks_nothing(stack: Stack) -> None:
    # The control: every refusal above is nginx's and the gateway's doing, not the upstream's.
    response = httpx.get(f"{stack.upstream_url}/", timeout=10.0)

    assert response.status_code == 200
    assert response.text == PAGE


def test_a_revoked_token_stops_reaching_the_upstream_within_seconds(stack: Stack) -> None:
    browser = stack.browser
    session = browser.login(ALICE)
    response = browser.request_token(session, audience=AUDIENCE)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert _get(stack, bearer(token))[0].status_code == 200

    assert browser.logout(session).status_code in (200, 204)

    refused = poll(
        lambda: _get(stack, bearer(token)),
        within=5,
        what="nginx to refuse the logged-out session's token",
        until=lambda result: result[0].status_code == 401,
    )
    assert refused[1] == []
