"""Pure rules for RFC 9068 access tokens: what a header and a claim set must look like.

No I/O and no clock of its own (``now`` is passed in), so every rule is testable alone.
The signature itself is checked by :mod:`shared.web.verifier` with joserfc's RS256.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from shared.core.errors import InvalidToken

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


_STRICT = StrictJSONDecoder()


def loads_strict(data: bytes) -> Any:
    """UTF-8 JSON without duplicate members, NaN/Infinity (which JSON does not have) or runaway nesting."""
    # Decoded here, not by json.loads: given bytes, it would also guess UTF-16 and UTF-32.
    return _STRICT.decode(data.decode("utf-8"))


_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# The characters that may end a segment of each length mod 4: the bits past the last whole
# byte must be zero, or one byte string would have several spellings (and a token several).
_CANONICAL_LAST = {
    0: frozenset(_ALPHABET),
    2: frozenset(_ALPHABET[::16]),
    3: frozenset(_ALPHABET[::4]),
}


def _decode_segment(segment: str) -> bytes:
    # The caller has checked the alphabet; only the length and the trailing bits remain.
    allowed = _CANONICAL_LAST.get(len(segment) % 4)
    if allowed is None or segment[-1] not in allowed:
        raise ValueError("not canonical unpadded base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64url_decode(segment: str) -> bytes:
    """Strict base64url without padding, as JWS requires, in its one canonical spelling."""
    if not segment:
        return b""
    if not _BASE64URL.fullmatch(segment):
        raise ValueError("not unpadded base64url")
    return _decode_segment(segment)


@dataclass(frozen=True, slots=True)
class CompactToken:
    """A compact JWS whose shape and protected header obey the rules; its signature is unchecked."""

    kid: str
    signing_input: bytes
    signature: bytes
    payload: bytes


# Every token one key signs carries the same header, byte for byte: its verdict is remembered.
# Only a header that passes is (an exception is never cached), so a flood of bad headers
# costs a full parse each time and can only evict good ones, which then parse again.
@functools.lru_cache(maxsize=64)
def _header_kid(segment: str) -> str:
    try:
        header = loads_strict(_decode_segment(segment))
    except ValueError:
        raise InvalidToken("malformed") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed")
    if not header.keys() <= ALLOWED_HEADER_MEMBERS:
        raise InvalidToken("header_member")
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("algorithm")
    if header.get("typ") != TOKEN_TYPE:
        raise InvalidToken("type")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise InvalidToken("kid")
    return kid


def parse_token(token: str, policy: TokenPolicy) -> CompactToken:
    """Check the shape and the protected header before any cryptography, decoding each part once."""
    if len(token) > policy.max_token_bytes:
        raise InvalidToken("oversized")
    match = _COMPACT.fullmatch(token)
    if match is None:
        raise InvalidToken("malformed")
    header_segment, payload_segment, signature_segment = match.groups()
    kid = _header_kid(header_segment)
    try:
        payload = _decode_segment(payload_segment)
        signature = _decode_segment(signature_segment)
    except ValueError:
        raise InvalidToken("malformed") from None
    signing_input = token[: match.end(2)].encode("ascii")
    return CompactToken(kid, signing_input, signature, payload)


def read_claims(token: CompactToken) -> dict[str, Any]:
    """The payload of a token whose signature has been verified, as a JSON object."""
    try:
        claims = loads_strict(token.payload)
    except ValueError:
        raise InvalidToken("malformed") from None
    if not isinstance(claims, dict):
        raise InvalidToken("malformed")
    return claims


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
