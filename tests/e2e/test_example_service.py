"""The example service (examples/invoices) as a real process behind the real gateway and auth.

Nothing in services/ names it: the gateway routes it because ``GATEWAY_ROUTES`` and
``INVOICES_URL`` say so, and auth mints tokens for it because ``TOKEN_AUDIENCES`` lists it.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from deploy.devcluster import REPO_ROOT, Cluster
from deploy.processes import free_port, with_parent_death_signal
from tests.support.cluster import ALICE, BOB, Browser, ClusterFactory, Secrets
from tests.support.http import assert_json_error, bearer
from tests.support.polling import poll

pytestmark = pytest.mark.e2e

EXAMPLE = REPO_ROOT / "examples" / "invoices"


@dataclass(frozen=True)
class Deployment:
    cluster: Cluster
    browser: Browser
    invoices_url: str


def _start_invoices(cluster: Cluster, port: int) -> subprocess.Popen[bytes]:
    # The environment every resource service gets from the cluster (JWKS_URL, TOKEN_ISSUER...),
    # and the example's own port.
    env = {**cluster.env_for("orders"), "INVOICES_PORT": str(port)}
    return subprocess.Popen(  # our own interpreter and module
        with_parent_death_signal([sys.executable, "-m", "examples.invoices"]),
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def deployment(cluster_factory: ClusterFactory) -> Iterator[Deployment]:
    port = free_port()
    invoices_url = f"http://127.0.0.1:{port}"
    env = {
        "GATEWAY_ROUTES": "/api/invoices=invoices/invoices@invoices",
        "INVOICES_URL": invoices_url,
        "TOKEN_AUDIENCES": "orders,invoices",
    }
    with cluster_factory("example-service", env) as cluster:
        process = _start_invoices(cluster, port)
        try:

            def ready() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"the invoices example exited with status {process.returncode}")
                return httpx.get(f"{invoices_url}/readyz", timeout=1.0).status_code == 200

            poll(ready, within=20, what="the invoices example to be ready", ignoring=(httpx.HTTPError,))
            with httpx.Client(base_url=cluster.url, timeout=10.0) as client:
                yield Deployment(cluster, Browser(cluster, client, Secrets()), invoices_url)
        finally:
            process.terminate()
            process.wait(timeout=15)


def _token(browser: Browser, email: str, audience: str = "invoices") -> str:
    response = browser.request_token(browser.login(email), audience=audience)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_an_invoice_is_created_and_listed_through_the_gateway(deployment: Deployment) -> None:
    client = deployment.browser.client
    token = _token(deployment.browser, ALICE)

    created = client.post("/api/invoices", json={"amount_cents": 1250}, headers=bearer(token))
    listed = client.get("/api/invoices", headers=bearer(token))

    assert created.status_code == 201, created.text
    assert created.json()["amount_cents"] == 1250
    assert created.json() in listed.json()["invoices"]


def test_each_user_sees_only_their_own_invoices(deployment: Deployment) -> None:
    client = deployment.browser.client
    alice = _token(deployment.browser, ALICE)
    client.post("/api/invoices", json={"amount_cents": 700}, headers=bearer(alice))

    bobs = client.get("/api/invoices", headers=bearer(_token(deployment.browser, BOB)))

    assert bobs.status_code == 200
    assert bobs.json() == {"invoices": []}


def test_the_gateway_refuses_tokens_for_other_audiences_and_none(deployment: Deployment) -> None:
    client = deployment.browser.client
    orders_token = _token(deployment.browser, ALICE, audience="orders")
    invoices_token = _token(deployment.browser, ALICE)

    assert_json_error(client.get("/api/invoices"), 401, "unauthenticated")
    assert_json_error(client.get("/api/invoices", headers=bearer(orders_token)), 401, "invalid_token")
    assert_json_error(client.get("/api/orders", headers=bearer(invoices_token)), 401, "invalid_token")


def test_the_example_verifies_again_when_reached_directly(deployment: Deployment) -> None:
    orders_token = _token(deployment.browser, ALICE, audience="orders")

    direct = httpx.get(f"{deployment.invoices_url}/invoices", headers=bearer(orders_token), timeout=10.0)

    assert_json_error(direct, 401, "invalid_token")


def test_bad_input_is_a_422_naming_the_field(deployment: Deployment) -> None:
    client = deployment.browser.client
    token = _token(deployment.browser, ALICE)

    response = client.post("/api/invoices", json={"amount_cents": -5}, headers=bearer(token))

    assert_json_error(response, 422, "validation_failed")


def test_the_gateways_public_description_includes_the_new_service(deployment: Deployment) -> None:
    response = deployment.browser.client.get("/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert "/api/invoices" in document["paths"]
    assert "x-unavailable-upstreams" not in document
    assert "no-store" not in response.headers.get("cache-control", "")


def test_the_example_imports_only_the_shared_public_api() -> None:
    # Only what a floor's package exports: a module below it (shared.web.verifier) is internal.
    floors = ("shared.core", "shared.web", "shared.runtime")
    for path in EXAMPLE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shared"):
                assert node.module in floors, f"{path.name} imports {node.module}"
                exported = importlib.import_module(node.module).__all__
                assert all(alias.name in exported for alias in node.names), f"{path.name}: {node.module}"
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("shared") for alias in node.names), path.name
