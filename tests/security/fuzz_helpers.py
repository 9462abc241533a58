"""Helpers of the fuzz tier: which described operations are mounted, the gateway's description,
and live credentials."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from deploy.devcluster import Cluster
from services.auth import routes as auth_routes
from services.gateway import balancer
from services.gateway import domain as gateway_domain
from services.gateway.app import create_app
from services.gateway.descriptions import PublicDescription, UpstreamDescriptions
from services.gateway.settings import OPENAPI_MAX_BYTES, GatewaySettings
from services.orders import routes as orders_routes
from shared.core import NotFound
from shared.web import build_app
from tests.support.cluster import add_user
from tests.support.servers import ServerThread

SESSION_COOKIE = "__Host-session"


@contextlib.asynccontextmanager
async def _no_lifespan(app: Starlette) -> AsyncIterator[None]:
    yield


async def _always_ready(request: Any) -> dict[str, Any]:
    return {}


def mounted_app(routes: list[BaseRoute]) -> Starlette:
    """A service's routes with the shared defaults (health routes), as its ``create_app`` mounts them."""
    return build_app(routes, lifespan=_no_lifespan, readiness=_always_ready)


def mounted_operations(routes: list[BaseRoute]) -> set[tuple[str, str]]:
    """(method, path) of every route a service mounts.

    The gateway's catch-all is not an operation: what it forwards is checked with :func:`is_proxied`.
    """
    mounted = set()
    for route in mounted_app(routes).routes:
        if isinstance(route, Route) and "{path:path}" not in route.path:
            # OpenAPI templates have no converters: /static/{name:path} is described as /static/{name}.
            path = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)
            mounted |= {(method, path) for method in route.methods or () if method != "HEAD"}
        elif isinstance(route, Mount):
            mounted.add(("GET", route.path + "/{asset}"))
    return mounted


UPSTREAM_ROUTES: dict[str, list[BaseRoute]] = {"auth": auth_routes.routes, "orders": orders_routes.routes}


def _by_host(apps: dict[str, Starlette]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await apps[dict(scope["headers"])[b"host"].decode()](scope, receive, send)

    return app


async def _gateway_document() -> bytes:
    apps = {f"{name}.test": mounted_app(routes) for name, routes in UPSTREAM_ROUTES.items()}
    pools = balancer.pools({name: [f"http://{name}.test"] for name in UPSTREAM_ROUTES})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_by_host(apps))) as client:
        upstreams = UpstreamDescriptions(
            client, pools, max_age=60, retry_after=1, max_bytes=OPENAPI_MAX_BYTES, timeout=10
        )
        body, complete = await PublicDescription(upstreams).render()
    assert complete, "an upstream's description could not be fetched"
    return body


@functools.cache
def _gateway_document_body() -> bytes:
    return asyncio.run(_gateway_document())


def gateway_document() -> dict[str, Any]:
    """The gateway's public description as the gateway builds it: from the documents the auth and
    orders routes serve at their own ``/openapi.json`` (in memory here, over HTTP in a cluster)."""
    document: dict[str, Any] = json.loads(_gateway_document_body())
    return document


@contextlib.contextmanager
def served_gateway(**environ: str) -> Iterator[ServerThread]:
    """The real gateway on loopback in front of the auth and orders routes, each on a port of its own.

    The upstreams have no keys or stores behind them: enough to serve their descriptions, which
    is what this is for.
    """
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(ServerThread(mounted_app(routes))).url
            for name, routes in UPSTREAM_ROUTES.items()
        }
        settings = GatewaySettings.from_env(
            {
                "AUTH_URL": urls["auth"],
                "ORDERS_URL": urls["orders"],
                "JWKS_URL": f"{urls['auth']}/.well-known/jwks.json",
                **environ,
            }
        )
        yield stack.enter_context(ServerThread(create_app(settings), lifespan="on"))


def is_proxied(path: str) -> bool:
    """True when the gateway forwards ``path`` (templates filled in) to an upstream."""
    try:
        gateway_domain.resolve(path.replace("{", "").replace("}", ""))
    except NotFound:
        return False
    return True


class Credentials:
    """A user of the fuzz cluster; :meth:`live` gives headers with every credential valid.

    A fuzzed request may end the session (``/logout`` with valid credentials succeeds); later
    cases of that operation then run signed out, and the next operation starts signed in again.
    """

    def __init__(self, cluster: Cluster, email: str, password: str):
        self.cluster = cluster
        self.email = email
        self.password = password
        self._cookie: str | None = None
        self._csrf: str | None = None
        self._http = httpx.Client(base_url=cluster.service_url("auth"), timeout=10.0)

    def close(self) -> None:
        self._http.close()

    def _login(self) -> None:
        response = self._http.post(
            "/login",
            json={"email": self.email, "password": self.password},
            headers=self._origin(),
        )
        assert response.status_code == 200, f"the fuzz user's own login failed: {response.text[:300]}"
        self._cookie = _cookie_value(response)
        self._csrf = response.json()["csrf_token"]

    def _session_is_live(self) -> bool:
        if self._cookie is None:
            return False
        me = self._http.get("/me", headers={"Cookie": f"{SESSION_COOKIE}={self._cookie}"})
        if me.status_code == 401:
            return False
        assert me.status_code == 200, me.text[:300]
        # A password change gives the session a new CSRF token; /me always has the current one.
        self._csrf = me.json()["csrf_token"]
        return True

    def live(self) -> dict[str, str]:
        """Cookie, CSRF token, Origin and a freshly minted bearer token, as a signed-in SPA sends them."""
        if not self._session_is_live():
            self._login()
        response = self._mint()
        if response.status_code == 429:
            # The fuzzed /token cases spent this session's token budget; a new session has its own.
            self._login()
            response = self._mint()
        assert response.status_code == 200, response.text[:300]
        return {
            **self._cookie_headers(),
            **self._origin(),
            "Authorization": f"Bearer {response.json()['access_token']}",
        }

    def _origin(self) -> dict[str, str]:
        return {"Origin": self.cluster.public_origin}

    def _cookie_headers(self) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={self._cookie}", "X-CSRF-Token": str(self._csrf)}

    def _mint(self) -> httpx.Response:
        return self._http.post(
            "/token", json={"audience": "orders"}, headers={**self._origin(), **self._cookie_headers()}
        )


def _cookie_value(response: httpx.Response) -> str:
    # httpx keeps a Secure cookie out of its jar on plain http, so read Set-Cookie itself.
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == SESSION_COOKIE:
            return rest.split(";", 1)[0]
    raise AssertionError("login set no session cookie")


def create_user(cluster: Cluster, role: str) -> tuple[str, str]:
    """A new account of ``role`` that only the fuzz tier uses, created as an operator would."""
    email = f"fuzz-{role}-{secrets.token_hex(4)}@example.com"
    password = secrets.token_urlsafe(24)
    add_user(cluster, email, password, role)
    return email, password
