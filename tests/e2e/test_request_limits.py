"""Every service, on its own port over real HTTP, refuses oversized bodies (413) and headers (431).

The gateway answers for itself on the public port, so a limit behind it (auth's 64 KiB body,
orders' 16 KiB, anyone's 8 KiB of headers) would go untested there; these requests go to each
service directly, as anything on the private network could.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from deploy.devcluster import Cluster
from tests.support.cluster import ALICE, Browser, Secrets
from tests.support.http import assert_json_error, bearer

pytestmark = pytest.mark.e2e

# (service, path, body limit in bytes)
SERVICES = [
    ("gateway", "/auth/login", 1024 * 1024),
    ("auth", "/login", 64 * 1024),
    ("orders", "/orders", 16 * 1024),
]
HEADER_LIMIT = 8 * 1024


def _chunks(total: int, size: int = 16 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


@pytest.fixture(scope="module")
def token(cluster: Cluster, secrets_seen: Secrets) -> str:
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        browser = Browser(cluster, http, secrets_seen)
        return browser.token(browser.login(ALICE))


def _post(
    cluster: Cluster, service: str, path: str, token: str, content: bytes | Iterator[bytes]
) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Origin": cluster.public_origin, **bearer(token)}
    with httpx.Client(base_url=cluster.service_url(service), timeout=30) as http:
        return http.post(path, content=content, headers=headers)


@pytest.mark.parametrize(("service", "path", "limit"), SERVICES, ids=[s[0] for s in SERVICES])
def test_a_declared_body_one_byte_over_the_limit_is_413(
    cluster: Cluster, token: str, service: str, path: str, limit: int
) -> None:
    response = _post(cluster, service, path, token, b"{" + b" " * (limit - 1) + b"}")
    assert_json_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(("service", "path", "limit"), SERVICES, ids=[s[0] for s in SERVICES])
def test_a_chunked_body_over_the_limit_is_413(
    cluster: Cluster, token: str, service: str, path: str, limit: int
) -> None:
    response = _post(cluster, service, path, token, _chunks(limit + 1))
    assert_json_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("service", ["gateway", "auth", "orders"])
def test_headers_over_the_limit_are_431(cluster: Cluster, service: str) -> None:
    with httpx.Client(base_url=cluster.service_url(service), timeout=10) as http:
        response = http.get("/healthz", headers={"X-Padding": "a" * HEADER_LIMIT})
        assert_json_error(response, 431, "headers_too_large")
        # Just under the limit is fine: the limit, not the header, is what refused it.
        assert http.get("/healthz", headers={"X-Padding": "a" * (HEADER_LIMIT // 2)}).status_code == 200
