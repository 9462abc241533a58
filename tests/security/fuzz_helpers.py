"""Helpers of the fuzz tier: which described operations are mounted, and live credentials."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from deploy.devcluster import Cluster
from services.gateway import domain as gateway_domain
from shared import NotFound, build_app

SESSION_COOKIE = "__Host-session"
# Minted tokens live 5 minutes; a fresh one well inside that keeps every case about the input alone.
TOKEN_REFRESH_SECONDS = 60.0


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
            mounted |= {(method, route.path) for method in route.methods or () if method != "HEAD"}
        elif isinstance(route, Mount):
            mounted.add(("GET", route.path + "/{asset}"))
    return mounted


def is_proxied(path: str) -> bool:
    """True when the gateway forwards ``path`` (templates filled in) to an upstream."""
    try:
        gateway_domain.resolve(path.replace("{", "").replace("}", ""))
    except NotFound:
        return False
    return True


class Credentials:
    """A logged-in user of the fuzz cluster: session cookie, CSRF token and a fresh bearer token.

    A fuzzed request may end the session (``/logout`` with valid credentials succeeds), so each
    call checks the session first and logs in again when it has gone.
    """

    def __init__(self, cluster: Cluster, email: str, password: str):
        self.cluster = cluster
        self.email = email
        self.password = password
        self.logins = 0
        self._cookie: str | None = None
        self._csrf: str | None = None
        self._token: str | None = None
        self._minted_at = 0.0
        self._http = httpx.Client(base_url=cluster.service_url("auth"), timeout=10.0)

    def close(self) -> None:
        self._http.close()

    def _origin(self) -> dict[str, str]:
        return {"Origin": self.cluster.public_origin}

    def _login(self) -> None:
        response = self._http.post(
            "/login", json={"email": self.email, "password": self.password}, headers=self._origin()
        )
        assert response.status_code == 200, f"the fuzz user's own login failed: {response.text[:300]}"
        self.logins += 1
        self._cookie = response.cookies.get(SESSION_COOKIE) or _cookie_value(response)
        self._csrf = response.json()["csrf_token"]
        self._token = None

    def _ensure_session(self) -> None:
        if self._cookie is not None:
            me = self._http.get("/me", headers={"Cookie": f"{SESSION_COOKIE}={self._cookie}"})
            if me.status_code == 200:
                # A password change gives the session a new CSRF token; /me always has the current one.
                self._csrf = me.json()["csrf_token"]
                return
            assert me.status_code == 401, me.text[:300]
        self._login()

    def _ensure_token(self) -> None:
        if self._token is not None and time.monotonic() - self._minted_at < TOKEN_REFRESH_SECONDS:
            return
        response = self._http.post(
            "/token", json={"audience": "orders"}, headers={**self._origin(), **self.cookie_headers()}
        )
        assert response.status_code == 200, response.text[:300]
        self._token = response.json()["access_token"]
        self._minted_at = time.monotonic()

    def cookie_headers(self) -> dict[str, str]:
        assert self._cookie is not None
        assert self._csrf is not None
        return {"Cookie": f"{SESSION_COOKIE}={self._cookie}", "X-CSRF-Token": self._csrf}

    def live(self) -> dict[str, str]:
        """The headers a logged-in client on the public origin sends, every credential valid."""
        self._ensure_session()
        self._ensure_token()
        return {
            **self.cookie_headers(),
            "Origin": self.cluster.public_origin,
            "Authorization": f"Bearer {self._token}",
        }


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
    result = cluster.auth_cli("users", "add", email, "--role", role, stdin=password + "\n")
    assert result.returncode == 0, result.stderr
    return email, password
