"""Attacks on TokenVerifier with real RSA keys and a real JWKSCache served through httpx.MockTransport."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.requests import Request

import shared.web.verifier
from shared.core.errors import InvalidToken, ServiceUnavailable, Unauthorized
from shared.core.tokens import AccessClaims, CompactToken, TokenPolicy, b64url_decode
from shared.web.jwks import JWKSCache, JWKSConfig
from shared.web.verifier import TokenVerifier, bearer_token
from tests.support.claims import DROP, ISSUER, NOW, b64, claims

JWKS_URL = "http://127.0.0.1:8001/.well-known/jwks.json"
POLICY = TokenPolicy(ISSUER, "orders", leeway=10)


@pytest.fixture(scope="module")
def signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "key-1"})


@pytest.fixture(scope="module")
def impostor_key() -> RSAKey:
    """Another key pair that claims the published key's kid."""
    return RSAKey.generate_key(2048, parameters={"kid": "key-1"})


@pytest.fixture(scope="module")
def unpublished_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "key-2"})


def good_claims(**changes: Any) -> dict[str, Any]:
    return claims(scope=DROP, **changes)


def mint(key: RSAKey, claims: dict[str, Any] | None = None, *, kid: str | None = "key-1") -> str:
    """A token as our issuer mints it, signed by joserfc."""
    header: dict[str, Any] = {"alg": "RS256", "typ": "at+jwt"}
    if kid is not None:
        header["kid"] = kid
    return jwt.encode(header, claims or good_claims(), key, algorithms=["RS256"])


def sign_by_hand(key: RSAKey, header: dict[str, Any], payload: bytes) -> str:
    """RS256 over exact bytes, so a payload can be one that no JSON library would write."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload)}"
    private_key = key.private_key
    assert isinstance(private_key, RSAPrivateKey)
    signature = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


HEADER = {"alg": "RS256", "typ": "at+jwt", "kid": "key-1"}


def jwks_handler(*keys: RSAKey) -> Callable[[httpx.Request], httpx.Response]:
    document = {"keys": [{**key.as_dict(private=False), "alg": "RS256", "use": "sig"} for key in keys]}

    def handle(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URL
        return httpx.Response(200, json=document)

    return handle


async def open_test_verifier(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[TokenVerifier, Any]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    config = JWKSConfig(url=JWKS_URL, refresh_interval=3600, retry_interval=3600)
    cache = JWKSCache(config, client)
    await cache.start()

    async def close() -> None:
        await cache.aclose()
        await client.aclose()

    return TokenVerifier(POLICY, cache, clock=lambda: NOW), close


@pytest.fixture
async def verifier(signing_key: RSAKey) -> AsyncIterator[TokenVerifier]:
    result, close = await open_test_verifier(jwks_handler(signing_key))
    yield result
    await close()


async def rejection(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    return caught.value.reason


def with_segment(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


async def test_valid_token_is_accepted(verifier: TokenVerifier, signing_key: RSAKey) -> None:
    assert verifier.ready
    assert await verifier.verify(mint(signing_key)) == AccessClaims(
        sub="user-1",
        aud="orders",
        iss=ISSUER,
        jti="jti-1",
        iat=NOW,
        exp=NOW + 300,
        sid="sid-1",
        client_id="spa",
        role="user",
        scope=None,
    )


async def test_hand_signed_token_is_accepted(verifier: TokenVerifier, signing_key: RSAKey) -> None:
    # The control for the hand-built attacks below: the hand signer itself makes good tokens.
    token = sign_by_hand(signing_key, HEADER, json.dumps(good_claims()).encode())
    assert (await verifier.verify(token)).sub == "user-1"


async def test_tampered_payload_under_the_original_signature_is_rejected(
    verifier: TokenVerifier, signing_key: RSAKey
) -> None:
    token = mint(signing_key)
    forged = b64(json.dumps(good_claims(sub="admin-1", role="admin")).encode())
    assert await rejection(verifier, with_segment(token, 1, forged)) == "signature"


async def test_tampered_header_under_the_original_signature_is_rejected(
    verifier: TokenVerifier, signing_key: RSAKey
) -> None:
    token = mint(signing_key)
    reordered = b64(json.dumps({"kid": "key-1", "typ": "at+jwt", "alg": "RS256"}).encode())
    assert await rejection(verifier, with_segment(token, 0, reordered)) == "signature"


@pytest.mark.parametrize(
    "cut",
    [lambda s: s[:-4], lambda s: s[: len(s) // 2], lambda s: s[:4], lambda s: ""],
    ids=["last-4", "half", "first-4", "empty"],
)
async def test_truncated_or_empty_signature_is_rejected(
    verifier: TokenVerifier, signing_key: RSAKey, cut: Callable[[str], str]
) -> None:
    token = mint(signing_key)
    assert await rejection(verifier, with_segment(token, 2, cut(token.split(".")[2]))) in {
        "malformed",
        "signature",
    }


async def test_signature_from_another_key_with_the_same_kid_is_rejected(
    verifier: TokenVerifier, impostor_key: RSAKey
) -> None:
    assert await rejection(verifier, mint(impostor_key)) == "signature"


def hs256_with_public_pem(key: RSAKey) -> str:
    """The classic confusion attack, built by hand so no library can refuse to make it."""
    header = {"alg": "HS256", "typ": "at+jwt", "kid": "key-1"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(good_claims()).encode())}"
    mac = hmac.new(key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


async def test_hs256_signed_with_the_public_key_pem_is_rejected(
    verifier: TokenVerifier, signing_key: RSAKey
) -> None:
    assert await rejection(verifier, hs256_with_public_pem(signing_key)) == "algorithm"


def unsigned(alg: str, signature: str) -> str:
    header = {"alg": alg, "typ": "at+jwt", "kid": "key-1"}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(good_claims()).encode())}.{signature}"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_token_is_rejected(verifier: TokenVerifier, alg: str) -> None:
    assert await rejection(verifier, unsigned(alg, "")) == "malformed"
    assert await rejection(verifier, unsigned(alg, b64(b"x" * 32))) == "algorithm"


@pytest.mark.parametrize("attack", ["hs256", "none"])
async def test_signature_check_alone_refuses_other_algorithms(
    verifier: TokenVerifier, signing_key: RSAKey, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    # Defence in depth: were the header rules skipped, only an RS256 signature may still verify.
    def parse_without_header_rules(token: str, policy: TokenPolicy) -> CompactToken:
        header, payload, signature = token.split(".")
        return CompactToken(
            "key-1", f"{header}.{payload}".encode(), b64url_decode(signature), b64url_decode(payload)
        )

    monkeypatch.setattr(shared.web.verifier, "parse_token", parse_without_header_rules)
    # An empty signature is exactly what a registry that allowed "none" would accept.
    token = hs256_with_public_pem(signing_key) if attack == "hs256" else unsigned("none", "")
    assert await rejection(verifier, token) == "signature"


async def test_token_without_kid_is_rejected_even_when_signed_by_a_published_key(
    verifier: TokenVerifier, signing_key: RSAKey
) -> None:
    assert await rejection(verifier, mint(signing_key, kid=None)) == "kid"


async def test_unknown_kid_is_an_invalid_token(verifier: TokenVerifier, unpublished_key: RSAKey) -> None:
    assert await rejection(verifier, mint(unpublished_key, kid="key-2")) == "unknown_kid"
    assert verifier.ready


@pytest.mark.parametrize("failure", ["connect", "http-500"])
async def test_unfetchable_jwks_is_service_unavailable_not_invalid_token(
    signing_key: RSAKey, failure: str
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if failure == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(500, text="down")

    verifier, close = await open_test_verifier(handle)
    try:
        assert not verifier.ready
        assert verifier.status()["ready"] is False
        with pytest.raises(ServiceUnavailable) as caught:
            await verifier.verify(mint(signing_key))
        assert not isinstance(caught.value, InvalidToken)
        assert caught.value.status == 503
    finally:
        await close()


async def test_a_bad_token_is_still_401_while_keys_are_unavailable() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    verifier, close = await open_test_verifier(handle)
    try:
        assert await rejection(verifier, "not-a-token") == "malformed"
    finally:
        await close()


@pytest.mark.parametrize(
    "payload",
    [
        b'{"iss": "http://localhost:8000", "sub": "user-1", "sub": "admin-1", "aud": "orders",'
        b' "exp": 1700000300, "iat": 1700000000, "jti": "jti-1"}',
        b'{"iss": "http://localhost:8000", "sub": "user-1", "aud": "gateway", "aud": "orders",'
        b' "exp": 1700000300, "iat": 1700000000, "jti": "jti-1"}',
    ],
    ids=["sub", "aud"],
)
async def test_payload_with_duplicate_claims_is_rejected(
    verifier: TokenVerifier, signing_key: RSAKey, payload: bytes
) -> None:
    assert await rejection(verifier, sign_by_hand(signing_key, HEADER, payload)) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [b'["iss", "sub"]', b'"user-1"', b"null", b"not json", b'{"exp": NaN}', b"[" * 1200 + b"]" * 1200],
    ids=["array", "string", "null", "text", "nan", "deep"],
)
async def test_signed_payload_that_is_not_a_claim_object_is_rejected(
    verifier: TokenVerifier, signing_key: RSAKey, payload: bytes
) -> None:
    token = sign_by_hand(signing_key, HEADER, payload)
    assert len(token) <= POLICY.max_token_bytes
    assert await rejection(verifier, token) == "malformed"


@pytest.mark.parametrize(
    ("name", "reason"), [("sub", "claim_type"), ("role", "claim_role"), ("sid", "claim_sid")]
)
async def test_a_signed_claim_holding_a_lone_surrogate_is_rejected(
    verifier: TokenVerifier, signing_key: RSAKey, name: str, reason: str
) -> None:
    # Found by tests/security: "sub": "\ud800" passed verification and orders answered 500.
    payload = json.dumps(good_claims(**{name: "\ud800"})).encode()
    assert b"\\ud800" in payload
    assert await rejection(verifier, sign_by_hand(signing_key, HEADER, payload)) == reason


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"exp": NOW - 10, "iat": NOW - 310, "nbf": NOW - 310}, "expired"),
        ({"aud": "gateway"}, "audience"),
        ({"iss": ISSUER + "/"}, "issuer"),
        ({"exp": NOW + 3600}, "lifetime"),
    ],
)
async def test_claims_are_checked_after_a_good_signature(
    verifier: TokenVerifier, signing_key: RSAKey, changes: dict[str, Any], expected: str
) -> None:
    assert await rejection(verifier, mint(signing_key, good_claims(**changes))) == expected


@pytest.mark.parametrize(
    "token",
    [
        "\x00",
        "é.é.é",
        "a.b.c",
        "...",
        f"{b64(b'[' * 1500 + b']' * 1500)}.e30.AAAA",
        f"{b64(b'{}')}.e30.AAAA",
        f"{b64(json.dumps(HEADER).encode())}.{b64(b'x' * 3000)}.AAAA",
        f"{b64(json.dumps(HEADER).encode())}.e30.{b64(bytes(2048))}",
    ],
    ids=[
        "nul",
        "non-ascii",
        "not-base64-json",
        "dots",
        "deep-header",
        "empty-header",
        "junk-payload",
        "huge-sig",
    ],
)
async def test_garbage_is_an_invalid_token_never_a_crash(verifier: TokenVerifier, token: str) -> None:
    await rejection(verifier, token)


def request_with(*authorization: bytes) -> Request:
    headers = [(b"authorization", value) for value in authorization]
    return Request({"type": "http", "method": "GET", "path": "/orders", "headers": headers})


def test_missing_authorization_is_unauthorized_not_invalid_token() -> None:
    with pytest.raises(Unauthorized) as caught:
        bearer_token(request_with())
    assert not isinstance(caught.value, InvalidToken)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "values",
    [
        (b"Basic dXNlcjpwYXNz",),
        (b"Bearer",),
        (b"Bearer ",),
        (b"Bearer    ",),
        (b"Bearer a.b.c d.e.f",),
        (b"Bearer\ta.b.c",),
        (b"Bearera.b.c",),
        (b"a.b.c",),
        (b"",),
        (b"Bearer a.b.c", b"Bearer a.b.c"),
        (b"Bearer a.b.c", b"Bearer d.e.f"),
    ],
    ids=[
        "basic",
        "no-token",
        "no-token-space",
        "only-spaces",
        "two-tokens",
        "tab",
        "no-separator",
        "no-scheme",
        "empty",
        "two-headers-same",
        "two-headers",
    ],
)
def test_malformed_authorization_is_invalid_token(values: tuple[bytes, ...]) -> None:
    with pytest.raises(InvalidToken) as caught:
        bearer_token(request_with(*values))
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("value", [b"Bearer a.b.c", b"bearer a.b.c", b"BEARER a.b.c"])
def test_bearer_scheme_is_case_insensitive(value: bytes) -> None:
    assert bearer_token(request_with(value)) == "a.b.c"


async def test_verify_request_reads_the_bearer_token(verifier: TokenVerifier, signing_key: RSAKey) -> None:
    request = request_with(b"Bearer " + mint(signing_key).encode())
    assert (await verifier.verify_request(request)).sub == "user-1"
