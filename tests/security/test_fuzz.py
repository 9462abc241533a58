"""Fuzzing every endpoint from the services' own OpenAPI descriptions, over real HTTP.

schemathesis generates valid and invalid requests (bodies, parameters, headers) for each
operation of auth and orders on their own ports and of the gateway on the public one, once
anonymous and once with every credential valid (session cookie, CSRF token, Origin, bearer
token). Every answer must be a documented status with the documented content type and body
shape, never a 5xx, and within the per-request timeout. The run is derandomized and bounded,
so CI replays the same cases every time.

The fuzzer gets its own cluster and its own accounts: it logs out, posts garbage logins and
changes passwords, none of which may touch the sessions and demo users other tests share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
from services.gateway import openapi as gateway_openapi
from services.gateway import routes as gateway_routes
from services.orders import openapi as orders_openapi
from services.orders import routes as orders_routes
from tests.e2e.conftest import ClusterFactory
from tests.security.fuzz_helpers import Credentials, create_user, is_proxied, mounted_operations

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 12
REQUEST_TIMEOUT = 5.0
REJECTED_LOCATIONS = (ParameterLocation.BODY, ParameterLocation.QUERY, ParameterLocation.PATH)


def invalid_input_is_rejected(
    ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """schemathesis' negative_data_rejection, for invalid bodies, queries and paths only.

    HTTP lets a client send any header it likes, so an unknown or odd header is no reason to
    refuse a request; and a signed-in case has its generated credentials replaced by valid ones.
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


def described(build: Callable[[], dict[str, object]], mounted: Callable[[str, str], bool]) -> object:
    """The service's description as schemathesis reads it, limited to the operations this branch mounts."""
    schema = schemathesis.openapi.from_dict(build())
    return schema.include(lambda context: mounted(context.operation.method.upper(), context.operation.path))


AUTH = described(auth_openapi.build_openapi, lambda method, path: (method, path) in AUTH_MOUNTED)
ORDERS = described(orders_openapi.build_openapi, lambda method, path: (method, path) in ORDERS_MOUNTED)
GATEWAY = described(gateway_openapi.build_openapi, gateway_mounted)


@dataclass
class FuzzTarget:
    cluster: Cluster
    users: dict[str, Credentials]

    def base_url(self, service: str) -> str:
        return self.cluster.url if service == "gateway" else self.cluster.service_url(service)


@pytest.fixture(scope="module")
def fuzz(cluster_factory: ClusterFactory) -> Iterator[FuzzTarget]:
    with cluster_factory("fuzz") as cluster:
        users = {role: Credentials(cluster, *create_user(cluster, role)) for role in ("user", "admin")}
        try:
            yield FuzzTarget(cluster, users)
        finally:
            for credentials in users.values():
                credentials.close()


def send(case: schemathesis.Case, fuzz: FuzzTarget, service: str, who: str) -> None:
    """Send one generated case as ``who`` (``anonymous`` keeps whatever the fuzzer generated)."""
    headers = None
    if who != "anonymous":
        # Passed as explicit headers, not put into the case, so schemathesis knows they are valid
        # and its ignored_auth check can strip them to prove each operation enforces them.
        headers = fuzz.users[who].live()
        # A generated cookie jar would replace the explicit Cookie header.
        case.cookies = {}
    case.call_and_validate(
        base_url=fuzz.base_url(service), headers=headers, checks=CHECKS, timeout=REQUEST_TIMEOUT
    )


# Every login costs an argon2 verification, and each fuzzed /logout that succeeds needs one, so
# the cookie services are fuzzed anonymously and as the identity that reaches the most code.
# Orders, where the role changes the answer, is fuzzed as both roles.
AS_ANYONE_AND_ADMIN = pytest.mark.parametrize("who", ["anonymous", "admin"])
AS_EVERY_ROLE = pytest.mark.parametrize("who", ["anonymous", "user", "admin"])


@AUTH.parametrize()
@FUZZ_SETTINGS
@AS_ANYONE_AND_ADMIN
def test_auth_answers_every_fuzzed_request_as_documented(
    case: schemathesis.Case, fuzz: FuzzTarget, who: str
) -> None:
    send(case, fuzz, "auth", who)


@ORDERS.parametrize()
@FUZZ_SETTINGS
@AS_EVERY_ROLE
def test_orders_answers_every_fuzzed_request_as_documented(
    case: schemathesis.Case, fuzz: FuzzTarget, who: str
) -> None:
    send(case, fuzz, "orders", who)


@GATEWAY.parametrize()
@FUZZ_SETTINGS
@AS_ANYONE_AND_ADMIN
def test_gateway_answers_every_fuzzed_request_as_documented(
    case: schemathesis.Case, fuzz: FuzzTarget, who: str
) -> None:
    send(case, fuzz, "gateway", who)


@pytest.mark.parametrize("service", ["auth", "orders", "gateway"])
def test_each_service_publishes_the_description_the_fuzzer_reads(fuzz: FuzzTarget, service: str) -> None:
    build = {
        "auth": auth_openapi.build_openapi,
        "orders": orders_openapi.build_openapi,
        "gateway": gateway_openapi.build_openapi,
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
