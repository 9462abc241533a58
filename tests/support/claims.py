"""Claim sets as our issuer mints them, for tests to bend one member at a time."""

from __future__ import annotations

import base64
from typing import Any

ISSUER = "http://localhost:8000"
NOW = 1_700_000_000
DROP = object()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes: Any) -> dict[str, Any]:
    """A claim set minted at NOW for audience orders; ``name=DROP`` removes a claim."""
    result: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": "orders",
        "exp": NOW + 300,
        "iat": NOW,
        "nbf": NOW,
        "jti": "jti-1",
        "client_id": "spa",
        "sid": "sid-1",
        "role": "user",
        "scope": "orders:read",
    }
    for name, value in changes.items():
        if value is DROP:
            result.pop(name)
        else:
            result[name] = value
    return result
