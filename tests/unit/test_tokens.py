"""Attacks on the pure token rules: header shape, claim checks and strict JSON, with an injected clock."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from shared.core.errors import InvalidToken
from shared.core.tokens import (
    MAX_KID_LENGTH,
    AccessClaims,
    TokenPolicy,
    check_claims,
    loads_strict,
    parse_token,
)
from tests.support.claims import DROP, ISSUER, NOW, b64, claims

LEEWAY = 10
POLICY = TokenPolicy(ISSUER, "orders", leeway=LEEWAY)
GOOD_HEADER: dict[str, Any] = {"alg": "RS256", "typ": "at+jwt", "kid": "key-1"}


# 256 bytes like a 2048-bit signature; chosen so the encoding holds both "-" and "_".
SIGNATURE = b64(bytes([0xFB, 0xFF, 0xBF]) * 85 + b"\x01")
PAYLOAD = b64(b'{"sub":"user-1"}')


def header_segment(header: dict[str, Any] | bytes) -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return b64(raw)


def token_with(
    header: dict[str, Any] | bytes = GOOD_HEADER, payload: str = PAYLOAD, signature: str = SIGNATURE
) -> str:
    return f"{header_segment(header)}.{payload}.{signature}"


def reason(action: Callable[[], object]) -> str:
    with pytest.raises(InvalidToken) as caught:
        action()
    return caught.value.reason


def header_reason(token: str, policy: TokenPolicy = POLICY) -> str:
    return reason(lambda: parse_token(token, policy))


def claims_reason(claim_set: dict[str, Any], now: float = NOW, policy: TokenPolicy = POLICY) -> str:
    return reason(lambda: check_claims(claim_set, policy, now))


def test_well_formed_header_yields_its_kid() -> None:
    assert parse_token(token_with(), POLICY).kid == "key-1"


def test_token_one_byte_over_the_cap_is_rejected_and_one_at_the_cap_is_not() -> None:
    token = token_with()
    assert parse_token(token, TokenPolicy(ISSUER, "orders", max_token_bytes=len(token))).kid == "key-1"
    assert header_reason(token, TokenPolicy(ISSUER, "orders", max_token_bytes=len(token) - 1)) == "oversized"


def test_oversized_token_is_rejected_before_any_parsing() -> None:
    # Garbage would be "malformed" if it were parsed at all; "oversized" proves the cap came first.
    assert header_reason("!" * (POLICY.max_token_bytes + 1)) == "oversized"
    assert header_reason(token_with(signature=SIGNATURE * 20)) == "oversized"


@pytest.mark.parametrize(
    "token",
    [
        "",
        header_segment(GOOD_HEADER),
        f"{header_segment(GOOD_HEADER)}.{PAYLOAD}",
        f"{token_with()}.{SIGNATURE}",
        # A compact JWE has five segments.
        f"{token_with()}.{SIGNATURE}.{SIGNATURE}",
    ],
    ids=["empty", "one", "two", "four", "five"],
)
def test_wrong_segment_count_is_malformed(token: str) -> None:
    assert header_reason(token) == "malformed"


@pytest.mark.parametrize(
    "token",
    [
        f".{PAYLOAD}.{SIGNATURE}",
        f"{header_segment(GOOD_HEADER)}..{SIGNATURE}",
        # The unsecured-JWS shape: an empty signature.
        f"{header_segment(GOOD_HEADER)}.{PAYLOAD}.",
        "..",
    ],
    ids=["header", "payload", "signature", "all"],
)
def test_empty_segment_is_malformed(token: str) -> None:
    assert header_reason(token) == "malformed"


def _header_with_padding() -> str:
    header = dict(GOOD_HEADER)
    while len(json.dumps(header)) % 3 == 0:
        header["kid"] += "x"
    padded = base64.urlsafe_b64encode(json.dumps(header).encode()).decode()
    assert padded.endswith("=")
    return padded


def _insert(segment: str, text: str) -> str:
    # At a multiple of four, a lenient decoder that skips unknown characters decodes the same bytes.
    return segment[:8] + text + segment[8:]


def _standard_alphabet(segment: str) -> str:
    assert "-" in segment
    assert "_" in segment
    return segment.replace("-", "+").replace("_", "/")


GOOD_H = header_segment(GOOD_HEADER)


@pytest.mark.parametrize(
    "token",
    [
        f"{_header_with_padding()}.{PAYLOAD}.{SIGNATURE}",
        f"{GOOD_H}.{PAYLOAD}.{SIGNATURE}==",
        f"{_insert(GOOD_H, '!')}.{PAYLOAD}.{SIGNATURE}",
        f"{_insert(GOOD_H, '!!!!')}.{PAYLOAD}.{SIGNATURE}",
        f"{_insert(GOOD_H, '    ')}.{PAYLOAD}.{SIGNATURE}",
        f"{_insert(GOOD_H, chr(9) * 4)}.{PAYLOAD}.{SIGNATURE}",
        f"{_insert(GOOD_H, 'é')}.{PAYLOAD}.{SIGNATURE}",
        f"{GOOD_H}.{_insert(PAYLOAD, '****')}.{SIGNATURE}",
        f"{GOOD_H}.{PAYLOAD}.{_insert(SIGNATURE, '$$$$')}",
        f"{GOOD_H}.{PAYLOAD}.{_insert(SIGNATURE, '™')}",
        f"{GOOD_H}.{PAYLOAD}.{_standard_alphabet(SIGNATURE)}",
        # "e31" decodes to "{}" like "e30" but with non-zero trailing bits: not the canonical encoding.
        f"{GOOD_H}.e31.{SIGNATURE}",
        f"{GOOD_H}.{PAYLOAD}.AB",
        # Five characters cannot be base64 of anything.
        f"{GOOD_H}.{PAYLOAD}.AAAAA",
    ],
    ids=[
        "header-padding",
        "signature-padding",
        "header-bang",
        "header-bangs",
        "header-spaces",
        "header-tabs",
        "header-non-ascii",
        "payload-stars",
        "signature-dollars",
        "signature-non-ascii",
        "signature-standard-alphabet",
        "payload-non-canonical",
        "signature-non-canonical",
        "signature-impossible-length",
    ],
)
def test_bad_base64url_is_malformed(token: str) -> None:
    assert header_reason(token) == "malformed"


@pytest.mark.parametrize(
    "raw",
    [b"not json", b'{"alg": "RS256"', b"\xff\xfe\x00", b"{'alg': 'RS256'}", b'{"alg": NaN}'],
    ids=["text", "truncated", "not-utf8", "single-quotes", "nan"],
)
def test_non_json_header_is_malformed(raw: bytes) -> None:
    assert header_reason(token_with(raw)) == "malformed"


@pytest.mark.parametrize(
    "raw",
    [b'["RS256", "at+jwt", "key-1"]', b'"RS256"', b"null", b"1", b"true"],
    ids=["array", "string", "null", "number", "bool"],
)
def test_header_that_is_not_an_object_is_malformed(raw: bytes) -> None:
    assert header_reason(token_with(raw)) == "malformed"


def test_deeply_nested_header_is_malformed_not_a_crash() -> None:
    # Under the size cap yet deeper than the interpreter's recursion limit.
    nested = b"[" * 1500 + b"]" * 1500
    token = token_with(nested, signature="AAAA")
    assert len(token) <= POLICY.max_token_bytes
    assert header_reason(token) == "malformed"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"alg": "RS256", "typ": "at+jwt", "kid": "key-1", "alg": "none"}',
        b'{"alg": "none", "typ": "at+jwt", "kid": "key-1", "alg": "RS256"}',
        b'{"alg": "RS256", "typ": "at+jwt", "kid": "key-1", "kid": "key-2"}',
    ],
    ids=["alg-last-none", "alg-last-rs256", "kid"],
)
def test_duplicate_header_members_are_malformed(raw: bytes) -> None:
    assert header_reason(token_with(raw)) == "malformed"


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("jwk", {"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIB"]),
        ("x5t", "abc"),
        ("crit", ["exp"]),
        ("cty", "JWT"),
        ("b64", False),
        ("zip", "DEF"),
        ("enc", "A256GCM"),
        ("iss", ISSUER),
    ],
)
def test_header_members_beyond_alg_kid_typ_are_rejected(member: str, value: Any) -> None:
    assert header_reason(token_with({**GOOD_HEADER, member: value})) == "header_member"


@pytest.mark.parametrize(
    "alg",
    [
        "none",
        "None",
        "NONE",
        "nOnE",
        "",
        "HS256",
        "RS384",
        "RS512",
        "PS256",
        "ES256",
        "EdDSA",
        "rs256",
        "RS256 ",
        None,
        ["RS256"],
        256,
    ],
)
def test_algorithms_other_than_rs256_are_rejected(alg: Any) -> None:
    assert header_reason(token_with({**GOOD_HEADER, "alg": alg})) == "algorithm"


def test_missing_alg_is_rejected() -> None:
    header = {"typ": "at+jwt", "kid": "key-1"}
    assert header_reason(token_with(header)) == "algorithm"


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+JWT", "AT+JWT", "at+jwt ", "", None, ["at+jwt"], 1])
def test_type_other_than_at_jwt_is_rejected(typ: Any) -> None:
    assert header_reason(token_with({**GOOD_HEADER, "typ": typ})) == "type"


def test_missing_type_is_rejected() -> None:
    assert header_reason(token_with({"alg": "RS256", "kid": "key-1"})) == "type"


@pytest.mark.parametrize(
    "kid",
    [None, 1, True, ["key-1"], {"kid": "key-1"}, "", "k" * (MAX_KID_LENGTH + 1)],
    ids=["null", "number", "bool", "list", "object", "empty", "overlong"],
)
def test_bad_kid_is_rejected(kid: Any) -> None:
    assert header_reason(token_with({**GOOD_HEADER, "kid": kid})) == "kid"


def test_missing_kid_is_rejected() -> None:
    assert header_reason(token_with({"alg": "RS256", "typ": "at+jwt"})) == "kid"


def test_kid_at_the_length_limit_is_accepted_verbatim() -> None:
    kid = "../" + "k" * (MAX_KID_LENGTH - 3)
    assert parse_token(token_with({**GOOD_HEADER, "kid": kid}), POLICY).kid == kid


def test_good_claim_set_returns_access_claims() -> None:
    assert check_claims(claims(), POLICY, NOW) == AccessClaims(
        sub="user-1",
        aud="orders",
        iss=ISSUER,
        jti="jti-1",
        iat=NOW,
        exp=NOW + 300,
        sid="sid-1",
        client_id="spa",
        role="user",
        scope="orders:read",
    )


def test_optional_claims_may_be_absent() -> None:
    result = check_claims(claims(nbf=DROP, sid=DROP, client_id=DROP, role=DROP, scope=DROP), POLICY, NOW)
    assert (result.sid, result.client_id, result.role, result.scope) == (None, None, None, None)
    assert not result.is_admin


def test_only_the_role_admin_is_admin() -> None:
    assert check_claims(claims(role="admin"), POLICY, NOW).is_admin
    assert not check_claims(claims(role="Admin"), POLICY, NOW).is_admin
    assert not check_claims(claims(role="user", scope="admin"), POLICY, NOW).is_admin


def test_expired_once_now_reaches_exp_plus_leeway() -> None:
    exp = NOW + 300
    assert check_claims(claims(), POLICY, exp + LEEWAY - 0.001).exp == exp
    assert claims_reason(claims(), now=exp + LEEWAY) == "expired"
    assert claims_reason(claims(), now=exp + 3600) == "expired"


def test_at_exactly_exp_with_no_leeway_is_expired() -> None:
    strict = TokenPolicy(ISSUER, "orders", leeway=0)
    exp = NOW + 300
    assert check_claims(claims(), strict, exp - 0.001).exp == exp
    assert claims_reason(claims(), now=exp, policy=strict) == "expired"


@pytest.mark.parametrize("name", ["nbf", "iat"])
def test_issued_or_valid_only_in_the_future_beyond_leeway_is_rejected(name: str) -> None:
    # A later iat takes exp along, so the lifetime rule cannot be what rejects it.
    exp = NOW + LEEWAY + 300 if name == "iat" else NOW + 300
    assert check_claims(claims(**{name: NOW + LEEWAY}, exp=exp), POLICY, NOW).sub == "user-1"
    assert claims_reason(claims(**{name: NOW + LEEWAY + 1}, exp=exp)) == "not_yet_valid"


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, "1700000300", str(NOW), True, False, None, [NOW], {"t": NOW}],
    ids=["nan", "inf", "-inf", "string", "string-now", "true", "false", "null", "list", "object"],
)
def test_numeric_dates_must_be_finite_numbers(name: str, value: Any) -> None:
    expected = f"missing_{name}" if value is None and name != "nbf" else f"claim_{name}"
    assert claims_reason(claims(**{name: value})) == expected


@pytest.mark.parametrize("name", ["iss", "sub", "aud", "exp", "iat", "jti"])
def test_each_required_claim_must_be_present(name: str) -> None:
    assert claims_reason(claims(**{name: DROP})) == f"missing_{name}"
    assert claims_reason(claims(**{name: None})) == f"missing_{name}"


@pytest.mark.parametrize(
    "iss",
    [
        ISSUER + "/",
        ISSUER.upper(),
        "HTTP://localhost:8000",
        "https://localhost:8000",
        "http://localhost:800",
        "http://localhost:80000",
        "http://localhost:8000.attacker.example",
        "http://localhost:8000/auth",
        " " + ISSUER,
        ISSUER + "\x00",
        "",
        [ISSUER],
        {"iss": ISSUER},
    ],
)
def test_issuer_must_match_exactly(iss: Any) -> None:
    assert claims_reason(claims(iss=iss)) == "issuer"


@pytest.mark.parametrize(
    "aud",
    ["gateway", "auth", "Orders", "orders ", "orders/", "", ["orders"], ["orders", "gateway"], ["gateway"]],
)
def test_audience_must_be_exactly_our_one_audience(aud: Any) -> None:
    assert claims_reason(claims(aud=aud)) == "audience"


def test_lifetime_may_reach_but_not_exceed_the_cap() -> None:
    assert check_claims(claims(exp=NOW + POLICY.max_lifetime), POLICY, NOW).exp == NOW + POLICY.max_lifetime
    assert claims_reason(claims(exp=NOW + POLICY.max_lifetime + 1)) == "lifetime"
    assert claims_reason(claims(exp=NOW + 10**12)) == "lifetime"


@pytest.mark.parametrize("exp", [NOW, NOW - 1], ids=["equal", "before"])
def test_exp_not_after_iat_is_rejected(exp: int) -> None:
    # With the leeway, such a token is neither expired nor early at NOW: only the lifetime rule is left.
    assert claims_reason(claims(exp=exp, iat=NOW)) == "lifetime"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("sub", 1, "claim_type"),
        ("sub", "", "claim_type"),
        ("sub", ["user-1"], "claim_type"),
        ("sub", {"id": "user-1"}, "claim_type"),
        ("jti", 1, "claim_type"),
        ("jti", "", "claim_type"),
        ("jti", ["jti-1"], "claim_type"),
        ("sub", "user-\ud800", "claim_type"),
        ("jti", "\udfff", "claim_type"),
        ("sid", "\ud800", "claim_sid"),
        ("role", "admin\ud800", "claim_role"),
        ("client_id", "\udc00spa", "claim_client_id"),
        ("scope", "\ud83d", "claim_scope"),
        ("sid", 1, "claim_sid"),
        ("sid", ["sid-1"], "claim_sid"),
        ("role", ["admin"], "claim_role"),
        ("role", {"admin": True}, "claim_role"),
        ("role", True, "claim_role"),
        ("client_id", 7, "claim_client_id"),
        ("scope", ["orders:read"], "claim_scope"),
    ],
)
def test_claims_of_the_wrong_type_are_rejected(name: str, value: Any, expected: str) -> None:
    # The lone surrogates were found by tests/security: a signed "sub": "\ud800" made orders answer 500.
    assert claims_reason(claims(**{name: value})) == expected


def test_a_claim_with_a_surrogate_pair_is_text() -> None:
    assert check_claims(claims(sub="user-\U0001f600"), POLICY, NOW).sub == "user-\U0001f600"


def test_policy_refuses_a_leeway_outside_zero_to_thirty_seconds() -> None:
    for leeway in (-1, 31, 3600):
        with pytest.raises(ValueError, match="leeway"):
            TokenPolicy(ISSUER, "orders", leeway=leeway)


def test_loads_strict_reads_plain_json() -> None:
    assert loads_strict(b'{"a": [1, 2.5, "x", null, true], "b": {"c": {}}}') == {
        "a": [1, 2.5, "x", None, True],
        "b": {"c": {}},
    }


@pytest.mark.parametrize(
    "raw",
    [b'{"sub": "alice", "sub": "admin"}', b'{"a": {"role": "user", "role": "admin"}}', b'[{"x": 1, "x": 1}]'],
    ids=["top-level", "nested", "in-array"],
)
def test_loads_strict_rejects_duplicate_members(raw: bytes) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        loads_strict(raw)


@pytest.mark.parametrize("raw", [b'{"exp": NaN}', b'{"exp": Infinity}', b'{"exp": -Infinity}', b"NaN"])
def test_loads_strict_rejects_nan_and_infinity(raw: bytes) -> None:
    with pytest.raises(ValueError, match="constant"):
        loads_strict(raw)


def test_loads_strict_turns_runaway_nesting_into_a_value_error() -> None:
    with pytest.raises(ValueError, match="nest"):
        loads_strict(b'{"a":' * 5000 + b"1" + b"}" * 5000)


def test_loads_strict_reads_utf8_only() -> None:
    # json.loads alone would guess UTF-16 from the bytes and accept this.
    with pytest.raises(UnicodeDecodeError):
        loads_strict('{"sub": "user-1"}'.encode("utf-16"))


def test_a_header_seen_before_does_not_excuse_the_rest_of_the_token() -> None:
    # The header's verdict is remembered; the payload and signature are checked every time.
    assert parse_token(token_with(), POLICY).kid == "key-1"
    assert header_reason(token_with(payload=PAYLOAD + "AAA")) == "malformed"
    assert header_reason(token_with(signature="e31")) == "malformed"


def test_a_refused_header_is_refused_every_time() -> None:
    bad = token_with({**GOOD_HEADER, "alg": "HS256"})
    assert [header_reason(bad) for _ in range(3)] == ["algorithm"] * 3
