"""Reading the services' HTTP answers: the session cookie, bearer headers, the shared error shape."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx

SESSION_COOKIE = "__Host-session"


@dataclass(frozen=True)
class SetCookie:
    """One parsed ``Set-Cookie`` header: the value and the attributes, names lower-cased."""

    name: str
    value: str
    attributes: dict[str, str]


def session_cookie(response: httpx.Response) -> SetCookie:
    """The one ``__Host-session`` cookie the response sets."""
    found = [
        cookie
        for cookie in (parse_set_cookie(header) for header in response.headers.get_list("set-cookie"))
        if cookie.name == SESSION_COOKIE
    ]
    assert len(found) == 1, f"expected one {SESSION_COOKIE} cookie, got {len(found)}"
    return found[0]


def parse_set_cookie(header: str) -> SetCookie:
    pair, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = pair.partition("=")
    parsed = {}
    for attribute in attributes:
        key, _, attribute_value = attribute.partition("=")
        parsed[key.strip().lower()] = attribute_value.strip()
    return SetCookie(name=name.strip(), value=value.strip(), attributes=parsed)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the claims of a compact JWS, without checking anything."""
    header, payload, _ = token.split(".")
    return _b64_json(header), _b64_json(payload)


def _b64_json(segment: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return decoded


def assert_json_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is the shared error shape with ``status`` (and ``code`` when given)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    for member in ("error", "detail"):
        assert isinstance(body.get(member), str), body
        assert body[member], body
    if code is not None:
        assert body["error"] == code, body
    return body
