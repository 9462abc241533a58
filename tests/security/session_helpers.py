"""What the session, CSRF and throttling tests share: fresh accounts, logins and the session API."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from deploy.devcluster import Cluster, ClusterConfig
from services.auth.key_store import init_keys
from tests.support.cluster import Browser, LoggedIn, add_user
from tests.support.http import SESSION_COOKIE, session_cookie

PASSWORD = "a-long-test-passphrase-0"


def new_user(cluster: Cluster, role: str = "user", password: str = PASSWORD) -> str:
    """A fresh account, added as an operator would; its email."""
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    add_user(cluster, email, password, role)
    return email


def login(browser: Browser, email: str, password: str = PASSWORD, **headers: str) -> LoggedIn:
    response = browser.post_login(email, password, headers)
    assert response.status_code == 200, response.text
    cookie = session_cookie(response).value
    body = response.json()
    browser.secrets.add(cookie)
    browser.secrets.add(body["csrf_token"])
    return LoggedIn(email=email, cookie=cookie, csrf_token=body["csrf_token"], user=body["user"])


def cookie_header(session: LoggedIn) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={session.cookie}"}


class SessionApi:
    """The session-management endpoints through the gateway, sent as the SPA sends them."""

    def __init__(self, browser: Browser):
        self.browser = browser
        self.client: httpx.Client = browser.client

    def unsafe(
        self, method: str, path: str, session: LoggedIn, *, json: Any = None, headers: Mapping[str, str] = {}
    ) -> httpx.Response:
        merged = {**self.browser.unsafe_headers(session), **headers}
        return self.client.request(method, path, json=json, headers=merged)

    def me(self, session: LoggedIn) -> httpx.Response:
        return self.client.get("/auth/me", headers=cookie_header(session))

    def sessions(self, session: LoggedIn) -> list[dict[str, Any]]:
        response = self.client.get("/auth/sessions", headers=cookie_header(session))
        assert response.status_code == 200, response.text
        listed: list[dict[str, Any]] = response.json()["sessions"]
        return listed

    def current_handle(self, session: LoggedIn) -> str:
        return str(next(s["handle"] for s in self.sessions(session) if s["current"]))

    def revoke(self, session: LoggedIn, handle: str) -> httpx.Response:
        return self.unsafe("DELETE", f"/auth/sessions/{handle}", session)

    def logout_all(self, session: LoggedIn) -> httpx.Response:
        return self.unsafe("POST", "/auth/logout-all", session)

    def change_password(self, session: LoggedIn, current: str, new: str) -> httpx.Response:
        self.browser.secrets.add(new)
        body = {"current_password": current, "new_password": new}
        return self.unsafe("POST", "/auth/password", session, json=body)

    def users(self, session: LoggedIn) -> httpx.Response:
        return self.client.get("/auth/admin/users", headers=cookie_header(session))

    def user_id(self, admin: LoggedIn, email: str) -> str:
        users = self.users(admin).json()["users"]
        return str(next(user["id"] for user in users if user["email"] == email))

    def admin(self, session: LoggedIn, user_id: str, action: str) -> httpx.Response:
        return self.unsafe("POST", f"/auth/admin/users/{user_id}/{action}", session)

    def is_live(self, session: LoggedIn) -> bool:
        status = self.me(session).status_code
        assert status in (200, 401), status
        return status == 200


def cleared_cookie(response: httpx.Response) -> bool:
    """The response deletes the session cookie (an expired ``__Host-session``)."""
    cookie = session_cookie(response)
    return cookie.value in ("", '""') and cookie.attributes.get("max-age") == "0"


@contextlib.contextmanager
def dedicated_cluster(state_dir: Path, env: Mapping[str, str]) -> Iterator[Cluster]:
    """A cluster of its own with ``env`` for auth (throttle limits, say), always stopped."""
    cluster = Cluster(ClusterConfig.on_free_ports(state_dir, env))
    init_keys(cluster.keys_dir)  # in this process, as cluster_factory does
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
