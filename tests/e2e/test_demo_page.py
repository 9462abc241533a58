"""The gateway serves the demo page: headers, revalidation, path traversal, and no shadowed API."""

from __future__ import annotations

import http.client
from pathlib import Path

import httpx
import pytest

from deploy.devcluster import Cluster
from services.gateway.app import STATIC_DIR
from tests.support.http import assert_json_error

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]


def raw_get(cluster: Cluster, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte: httpx would normalise dot segments first."""
    connection = http.client.HTTPConnection("127.0.0.1", cluster.config.gateway_port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", f"localhost:{cluster.config.gateway_port}")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "file", "content_type"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/static/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/static/app.css", "app.css", "text/css; charset=utf-8"),
        ("/static/favicon.svg", "favicon.svg", "image/svg+xml"),
    ],
)
def test_the_page_and_its_files_come_with_their_type_and_security_headers(
    client: httpx.Client, path: str, file: str, content_type: str
) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.content == (STATIC_DIR / file).read_bytes()
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-cache"
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy


def test_a_browser_revalidates_with_the_etag_and_gets_an_empty_304(client: httpx.Client) -> None:
    first = client.get("/static/app.js")

    again = client.get("/static/app.js", headers={"If-None-Match": first.headers["etag"]})
    changed = client.get("/static/app.js", headers={"If-None-Match": '"stale"'})

    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert changed.status_code == 200
    assert changed.content == first.content


def test_head_answers_the_headers_without_the_body(client: httpx.Client) -> None:
    response = client.head("/")

    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    "target",
    [
        "/static/../services/gateway/app.py",
        "/static/../../pyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/..%5c..%5cpyproject.toml",
        "/static/....//....//pyproject.toml",
        "/static/%252e%252e/pyproject.toml",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/../../../../../../etc/passwd",
        "/static/app.js%00.html",
        "/static/./app.js/../../app.py",
        "/static/",
        "/static",
        "/static/APP.JS",
        "/static/app.py",
        "/static/__init__.py",
    ],
)
def test_static_paths_name_only_the_shipped_files(cluster: Cluster, target: str) -> None:
    status, body = raw_get(cluster, target)

    assert status in (400, 404), (status, body[:200])
    for leaked in (b"[project]", b"root:", b"def create_app", b"import"):
        assert leaked not in body


def test_the_api_and_the_keys_are_not_shadowed_by_the_page(client: httpx.Client) -> None:
    assert_json_error(client.get("/auth/me"), 401, "no_session")
    assert_json_error(client.get("/api/orders"), 401, "unauthenticated")
    jwks = client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert jwks.json()["keys"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_the_page_accepts_only_reads(client: httpx.Client, method: str) -> None:
    for path in ("/", "/static/app.js"):
        response = client.request(method, path, content=b"{}")
        assert response.status_code in (404, 405), (method, path, response.status_code)
        assert "content-security-policy" not in response.headers
