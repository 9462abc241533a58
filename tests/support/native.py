"""A native client (a phone app, a CLI) as the contract describes it: a refresh handle in JSON, no cookie."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from deploy.devcluster import Cluster
from tests.support.http import assert_json_error

#: The native routes through the gateway; auth itself serves them under ``/native``.
GATEWAY_PREFIX = "/auth/native"
AUTH_PREFIX = "/native"
# URL-safe base64 and dots, as the contract promises: safe in a JSON string, a header, a keychain.
HANDLE_SHAPE = re.compile(r"[A-Za-z0-9_\-.]{64,256}")


@dataclass(frozen=True)
class Minted:
    """One good refresh: the access token and the handle that replaces the presented one."""

    access_token: str
    handle: str


@dataclass
class Handles:
    """Every handle a module saw, so that its last test can prove no service ever logged one."""

    values: set[str] = field(default_factory=set)

    def add(self, handle: str) -> None:
        self.values.add(handle)

    def secrets(self) -> set[str]:
        """Each handle and its last part (the secret), which a log that kept half a handle still shows."""
        return self.values | {handle.rsplit(".", 1)[-1] for handle in self.values}


def assert_not_echoed(response: httpx.Response, *handles: str) -> None:
    """No part of the response (body or headers) carries any of ``handles`` or their secret parts."""
    everything = response.text + "".join(f"{name}:{value}" for name, value in response.headers.multi_items())
    for handle in handles:
        assert handle not in everything, "the response echoes a presented handle"
        secret = handle.rsplit(".", 1)[-1]
        if len(secret) >= 16:
            assert secret not in everything, "the response echoes a presented handle's secret"


def assert_refused(
    response: httpx.Response, status: int, code: str | None, *presented: str
) -> dict[str, Any]:
    """The shared error shape with ``status`` and ``code``, echoing none of the presented handles."""
    body = assert_json_error(response, status, code)
    assert set(body) == {"error", "detail"}, body
    assert_not_echoed(response, *presented)
    return body


class NativeClient:
    """The native routes, sent as a native client sends them: JSON bodies, no cookie, no Origin.

    ``prefix`` is :data:`GATEWAY_PREFIX` on a client of the gateway and :data:`AUTH_PREFIX` on a
    client of auth itself (where a test may stand for another address with ``X-Forwarded-For``).
    """

    def __init__(
        self,
        client: httpx.Client,
        handles: Handles,
        *,
        prefix: str = GATEWAY_PREFIX,
        headers: Mapping[str, str] | None = None,
    ):
        self.client = client
        self.handles = handles
        self.prefix = prefix
        self.headers = dict(headers or {})

    def post(self, route: str, body: Any, headers: Mapping[str, str] | None = None) -> httpx.Response:
        response = self.client.post(
            f"{self.prefix}/{route}", json=body, headers={**self.headers, **(headers or {})}
        )
        # A native answer never sets a cookie: there is no cookie path to fall back to.
        assert not response.headers.get_list("set-cookie"), response.headers
        if response.status_code == 200:
            assert "no-store" in response.headers.get("cache-control", ""), response.headers
            handle = response.json().get("refresh_handle")
            if isinstance(handle, str):
                self.handles.add(handle)
        return response

    def post_login(
        self, email: str, password: str, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return self.post("login", {"email": email, "password": password}, headers)

    def login(self, email: str, password: str) -> str:
        """A fresh native session of ``email``; its first refresh handle."""
        response = self.post_login(email, password)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"user", "refresh_handle"}, body
        assert body["user"]["email"] == email, body
        handle: str = body["refresh_handle"]
        assert HANDLE_SHAPE.fullmatch(handle), "a refresh handle outside the promised shape"
        return handle

    def refresh(
        self, handle: str, audience: str = "orders", headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return self.post("token", {"refresh_handle": handle, "audience": audience}, headers)

    def mint(self, handle: str, audience: str = "orders") -> Minted:
        """A good refresh of ``handle``: an access token and the next handle."""
        response = self.refresh(handle, audience)
        assert response.status_code == 200, response.text
        return minted(response, handle)

    def logout(self, handle: str) -> httpx.Response:
        return self.post("logout", {"refresh_handle": handle})


def minted(response: httpx.Response, presented: str) -> Minted:
    """What a 200 from the token route carries, checked against the contract."""
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_handle"}, sorted(body)
    assert body["token_type"] == "Bearer"
    assert HANDLE_SHAPE.fullmatch(body["refresh_handle"]), "a refresh handle outside the promised shape"
    assert body["refresh_handle"] != presented, "a refresh returned the handle it was given"
    assert presented not in response.text
    return Minted(access_token=body["access_token"], handle=body["refresh_handle"])


def concurrent_refreshes(base_url: str, path: str, handle: str, count: int) -> list[httpx.Response]:
    """``count`` refreshes of one handle sent at once, each on its own connection, in the order sent.

    The connections are opened (one request each to a cheap route) before the refreshes go, so
    that the refreshes themselves reach the server together rather than behind TCP handshakes.
    """

    async def send_all() -> list[httpx.Response]:
        clients = [httpx.AsyncClient(base_url=base_url, timeout=10.0) for _ in range(count)]
        try:
            await asyncio.gather(*(client.get("/healthz") for client in clients))
            body = {"refresh_handle": handle, "audience": "orders"}
            return list(await asyncio.gather(*(client.post(path, json=body) for client in clients)))
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))

    return asyncio.run(send_all())


def assert_logged_nowhere(cluster: Cluster, secrets: Iterable[str], services: Iterable[str]) -> None:
    """No line any of ``services`` wrote (as the cluster kept them) contains any of ``secrets``."""
    wanted = [secret for secret in secrets if len(secret) >= 16]
    assert wanted, "no handles to look for: the module saw none"
    for service in services:
        for line in cluster.output(service):
            leaked = [secret for secret in wanted if secret in line]
            assert not leaked, f"{service} logged a refresh handle or its secret"
