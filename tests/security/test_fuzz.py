"""Fuzzing every endpoint from the services' own OpenAPI descriptions, over real HTTP.

schemathesis generates valid and invalid requests (bodies, parameters, headers) for each
operation of auth and orders on their own ports and of the gateway on the public one, once
anonymous and once with every credential valid (session cookie, CSRF token, Origin, bearer
token). Every answer must be a documented status with the documented content type and body
shape, never a 5xx, and within the per-request timeout. The run is derandomized and bounded,
so CI replays the same cases every time.

The fuzzer gets its own cluster and its own accounts: it logs out, posts garbage logins and
changes passwords (once the contract's endpoints land), none of which may touch the sessions and
demo users other tests share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from deploy.devcluster import Cluster
from services.auth import openapi as auth_openapi
from services.auth import routes as auth_routes
from services.gateway import domain as gateway_domain
from services.gateway import routes as gateway_routes
from services.orders import openapi as orders_openapi
from services.orders import routes as orders_routes
from tests.security.fuzz_helpers import (
    Credentials,
    create_user,
    gateway_document,
    is_proxied,
    mounted_operations,
)
from tests.support.cluster import ClusterFactory

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 12
REQUEST_TIMEOUT = 5.0
REJECTED_LOCATIONS = (ParameterLocation.BODY, ParameterLocation.PATH)


def invalid_input_is_rejected(
    ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """schemathesis' negative_data_rejection, for invalid bodies and paths only.

    Unknown headers and query parameters are ignored, as HTTP servers do (a cache-busting
    ``?_=123`` must not fail a request), and a signed-in case has its generated credentials
    replaced by valid ones, so neither location says whether the server validates input.
    """
    if case.meta is None or not any(case.meta.is_negative_at(location) for location in REJECTED_LOCATIONS):
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    invalid_input_is_rejected,
    ignored_auth,
]
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # No shrinking: a failure is reported with the exact request (as curl), and a passing run
    # stays within its bound.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)

AUTH_MOUNTED = mounted_operations(auth_routes.routes)
ORDERS_MOUNTED = mounted_operations(orders_routes.routes)
GATEWAY_OWN = mounted_operations(gateway_routes.ROUTES)
UPSTREAM_MOUNTED = {"auth": AUTH_MOUNTED, "orders": ORDERS_MOUNTED}


def gateway_mounted(method: str, path: str) -> bool:
    """The gateway serves the path itself, or forwards it to an upstream that mounts it."""
    if (method, path) in GATEWAY_OWN:
        return True
    if path == "/openapi.json" or not is_proxied(path):
        return False
    route = gateway_domain.resolve(path.replace("{", "").replace("}", "")).route
    upstream_path = route.upstream_prefix + path[len(route.prefix) :]
    return (method, upstream_path) in UPSTREAM_MOUNTED[route.upstream]


def described(
    build: Callable[[], dict[str, Any]], mounted: Callable[[str, str], bool], *, login: str, logins: bool
) -> schemathesis.BaseSchema:
    """The service's description as schemathesis reads it: the operations this branch mounts, and
    either only the login operation or all but it.

    Login is fuzzed last: hundreds of failed logins from one address may trip a per-IP budget,
    and every other operation may still need to sign its user in again first.
    """

    def selected(context: Any) -> bool:
        method, path = context.operation.method.upper(), context.operation.path
        return mounted(method, path) and (path == login) == logins

    return schemathesis.openapi.from_dict(build()).include(selected)


def auth_mounted(method: str, path: str) -> bool:
    return (method, path) in AUTH_MOUNTED


AUTH = described(auth_openapi.build_openapi, auth_mounted, login="/login", logins=False)
AUTH_LOGIN = described(auth_openapi.build_openapi, auth_mounted, login="/login", logins=True)
ORDERS = described(
    orders_openapi.build_openapi,
    lambda method, path: (method, path) in ORDERS_MOUNTED,
    login="",
    logins=False,
)
# The gateway serves what it builds from the upstreams' descriptions; the test below checks that the
# cluster's gateway serves exactly this one, so every operation it describes is fuzzed.
GATEWAY = described(gateway_document, gateway_mounted, login="/auth/login", logins=False)
GATEWAY_LOGIN = described(gateway_document, gateway_mounted, login="/auth/login", logins=True)


@dataclass
class FuzzTarget:
    cluster: Cluster
    users: dict[str, Credentials]

    def base_url(self, service: str) -> str:
        return self.cluster.url if service == "gateway" else self.cluster.service_url(service)


# The fuzzer sends wrong passwords by the hundred from one address; the throttles have their
# own attack tests (test_throttling.py), and here they would only turn the run into 429s.
UNTHROTTLED = {
    "LOGIN_IP_LIMIT": "1000000",
    "LOGIN_ACCOUNT_IP_LIMIT": "1000000",
    "LOGIN_ACCOUNT_LIMIT": "1000000",
    "TOKEN_RATE_LIMIT": "1000000",
}


@pytest.fixture(scope="module")
def fuzz(cluster_factory: ClusterFactory) -> Iterator[FuzzTarget]:
    with cluster_factory("fuzz", UNTHROTTLED) as cluster:
        users = {role: Credentials(cluster, *create_user(cluster, role)) for role in ("user", "admin")}
        try:
            yield FuzzTarget(cluster, users)
        finally:
            for credentials in users.values():
                credentials.close()


@pytest.fixture
def credentials(fuzz: FuzzTarget, who: str) -> dict[str, str] | None:
    """Valid credentials for the whole run of one operation (None when fuzzing anonymously)."""
    return None if who == "anonymous" else fuzz.users[who].live()


def send(case: schemathesis.Case, url: str, credentials: dict[str, str] | None) -> None:
    """Send one generated case, with ``credentials`` replacing whatever the fuzzer generated for them."""
    if credentials is not None:
        # Explicit headers rather than part of the case: schemathesis then knows they are valid,
        # and its ignored_auth check strips them to prove each operation enforces them. A
        # generated cookie jar would replace the explicit Cookie header.
        case.cookies = {}
    case.call_and_validate(base_url=url, headers=credentials, checks=CHECKS, timeout=REQUEST_TIMEOUT)


# Each login costs an argon2 verification, so the cookie services are fuzzed anonymously and as
# the identity that reaches the most code; orders, where the role changes answers, as both roles.
AS_ANYONE_AND_ADMIN = pytest.mark.parametrize("who", ["anonymous", "admin"])
AS_EVERY_ROLE = pytest.mark.parametrize("who", ["anonymous", "user", "admin"])


@AUTH.parametrize()
@FUZZ_SETTINGS
@AS_ANYONE_AND_ADMIN
def test_auth_answers_every_fuzzed_request_as_documented(
    case: schemathesis.Case, fuzz: FuzzTarget, credentials: dict[str, str] | None
) -> None:
    send(case, fuzz.base_url("auth"), credentials)


@ORDERS.parametrize()
@FUZZ_SETTINGS
@AS_EVERY_ROLE
def test_orders_answers_every_fuzzed_request_as_documented(
    case: schemathesis.Case, fuzz: FuzzTarget, credentials: dict[str, str] | None
) -> None:
    send(case, fuzz.base_url("orders"), credentials)


@GATEWAY.parametrize()
@FUZZ_SETTINGS
@AS_ANYONE_AND_ADMIN
def test_gateway_answers_every_fuzzed_request_as_documented(
    case: schemathesis.Case, fuzz: FuzzTarget, credentials: dict[str, str] | None
) -> None:
    send(case, fuzz.base_url("gateway"), credentials)


@pytest.mark.parametrize("service", ["auth", "orders", "gateway"])
def test_each_service_publishes_the_description_the_fuzzer_reads(fuzz: FuzzTarget, service: str) -> None:
    build = {
        "auth": auth_openapi.build_openapi,
        "orders": orders_openapi.build_openapi,
        "gateway": gateway_document,
    }[service]
    response = httpx.get(f"{fuzz.base_url(service)}/openapi.json", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    assert response.json() == build()


@pytest.mark.parametrize("path", ["/auth/openapi.json", "/auth/OpenAPI.json", "/auth/%6Fpenapi.json"])
def test_the_gateway_does_not_publish_auths_private_description(fuzz: FuzzTarget, path: str) -> None:
    response = httpx.get(f"{fuzz.cluster.url}{path}", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@AUTH_LOGIN.parametrize()
@FUZZ_SETTINGS
@AS_ANYONE_AND_ADMIN
def test_auth_login_answers_every_fuzzed_request_as_documented(
    case: schemathesis.Case, fuzz: FuzzTarget, credentials: dict[str, str] | None
) -> None:
    send(case, fuzz.base_url("auth"), credentials)


@GATEWAY_LOGIN.parametrize()
@FUZZ_SETTINGS
@AS_ANYONE_AND_ADMIN
def test_gateway_login_answers_every_fuzzed_request_as_documented(
    case: schemathesis.Case, fuzz: FuzzTarget, credentials: dict[str, str] | None
) -> None:
    send(case, fuzz.base_url("gateway"), credentials)
