"""Pure rules for RFC 9068 access tokens: what a header and a claim set must look like.

No I/O and no clock of its own (``now`` is passed in), so every rule is testable alone.
The signature itself is checked by :mod:`shared.verifier` with joserfc.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from shared.errors import InvalidToken

ALGORITHM = "RS256"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
ALLOWED_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti")
MAX_KID_LENGTH = 128


@dataclass(frozen=True)
class TokenPolicy:
    """What one verifier accepts. ``audience`` is the service's own name, e.g. ``orders``."""

    issuer: str
    audience: str
    leeway: int = 30
    max_lifetime: int = 300
    max_token_bytes: int = 4096

    def __post_init__(self) -> None:
        if not 0 <= self.leeway <= 30:
            raise ValueError("leeway must be between 0 and 30 seconds")


@dataclass(frozen=True)
class AccessClaims:
    """The verified claims a service may rely on."""

    sub: str
    aud: str
    iss: str
    jti: str
    iat: int
    exp: int
    sid: str | None
    client_id: str | None
    role: str | None
    scope: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate member")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


class StrictJSONDecoder(json.JSONDecoder):
    """:func:`loads_strict` as a decoder class, for joserfc's ``decoder_cls``."""

    def __init__(self, **kwargs: Any):
        kwargs.update(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
        super().__init__(**kwargs)

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().decode(s, *args, **kwargs)
        except RecursionError:
            # A few KiB of brackets nest deeper than the interpreter allows: bad input, not a crash.
            raise ValueError("JSON nested too deeply") from None


def loads_strict(data: bytes) -> Any:
    """JSON without duplicate members, NaN/Infinity (which JSON does not have) or runaway nesting."""
    return json.loads(data, cls=StrictJSONDecoder)


_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(segment: str) -> bytes:
    """Strict base64url without padding, as JWS requires, in its one canonical spelling."""
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    # Non-zero leftover bits would give one token many spellings.
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode():
        raise ValueError("non-canonical base64url")
    return data


def read_header(token: str, policy: TokenPolicy) -> str:
    """Check the shape and the protected header before any cryptography; return the ``kid``."""
    if len(token) > policy.max_token_bytes:
        raise InvalidToken("oversized")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidToken("malformed")
    try:
        header = loads_strict(b64url_decode(parts[0]))
        b64url_decode(parts[1])
        b64url_decode(parts[2])
    except ValueError:
        raise InvalidToken("malformed") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed")
    if not set(header) <= ALLOWED_HEADER_MEMBERS:
        raise InvalidToken("header_member")
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("algorithm")
    if header.get("typ") != TOKEN_TYPE:
        raise InvalidToken("type")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise InvalidToken("kid")
    return kid


def _numeric_date(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"claim_{name}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidToken(f"claim_{name}")
    return int(value)


def _is_text(value: Any) -> TypeGuard[str]:
    # JSON's "\\ud800" escape decodes to a lone surrogate, which no UTF-8 encoder accepts: a signed
    # "sub" holding one passed verification, then orders answered 500 when SQLite bound it.
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _optional_str(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not _is_text(value):
        raise InvalidToken(f"claim_{name}")
    return value


def check_claims(claims: dict[str, Any], policy: TokenPolicy, now: float) -> AccessClaims:
    """Apply the time, issuer, audience and shape rules to a signature-verified claim set."""
    for name in REQUIRED_CLAIMS:
        if claims.get(name) is None:
            raise InvalidToken(f"missing_{name}")
    exp = _numeric_date(claims, "exp")
    iat = _numeric_date(claims, "iat")
    nbf = _numeric_date(claims, "nbf") if "nbf" in claims else iat
    # A token is dead from its exp second on (RFC 7519 4.1.4: "on or after").
    if now >= exp + policy.leeway:
        raise InvalidToken("expired")
    if iat > now + policy.leeway or nbf > now + policy.leeway:
        raise InvalidToken("not_yet_valid")
    if exp - iat > policy.max_lifetime or exp <= iat:
        raise InvalidToken("lifetime")
    if claims["iss"] != policy.issuer:
        raise InvalidToken("issuer")
    # One audience per token: a list, even one naming us, is not what our issuer mints.
    if claims["aud"] != policy.audience:
        raise InvalidToken("audience")
    sub, jti = claims["sub"], claims["jti"]
    if not _is_text(sub) or not sub or not _is_text(jti) or not jti:
        raise InvalidToken("claim_type")
    return AccessClaims(
        sub=sub,
        aud=policy.audience,
        iss=policy.issuer,
        jti=jti,
        iat=iat,
        exp=exp,
        sid=_optional_str(claims, "sid"),
        client_id=_optional_str(claims, "client_id"),
        role=_optional_str(claims, "role"),
        scope=_optional_str(claims, "scope"),
    )
