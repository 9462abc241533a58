"""What an attacker does with a token, and how the suite presents the result to both verifiers.

Tokens are assembled by hand from raw segments and signed with ``cryptography`` directly, so a
forged token can carry anything: headers joserfc would refuse to write, duplicate JSON members,
``NaN`` where a number belongs, or a signature made with the wrong algorithm or key.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from deploy.devcluster import Cluster
from services.auth.key_store import load_keys
from shared.web import VerifierSettings
from tests.support.claims import DROP, b64

__all__ = [
    "DROP",
    "TARGETS",
    "assert_accepted",
    "assert_rejected",
    "b64",
    "claims",
    "cluster_kid",
    "cluster_private_key",
    "cluster_public_jwk",
    "compact",
    "forge",
    "header",
    "http",
    "leeway",
    "present",
    "segment",
    "sign",
    "signed_by_cluster",
    "target_url",
]

#: The two verifiers every token attack is run against: the gateway and orders on its own port.
TARGETS = ("gateway", "orders")
SUBJECT = "security-suite-user"
CHALLENGE = 'Bearer error="invalid_token"'
# No attack may make a verifier think for long; a hang shows up as a timeout, not a slow pass.
REQUEST_TIMEOUT = 5.0

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | bytes

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_HMAC_HASHES = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


def segment(part: dict[str, Any] | bytes | str) -> str:
    """A base64url segment of a JSON object (compact, as issuers write it), raw bytes or text."""
    if isinstance(part, dict):
        part = json.dumps(part, separators=(",", ":"))
    if isinstance(part, str):
        part = part.encode()
    return b64(part)


def sign(alg: str, key: PrivateKey, signing_input: bytes) -> bytes:
    """The JWS signature of ``signing_input`` under ``alg`` (RFC 7518 section 3) with ``key``."""
    family, bits = alg[:2], alg[2:]
    if family == "HS" and isinstance(key, bytes):
        return hmac.new(key, signing_input, _HMAC_HASHES[bits]).digest()
    if family == "RS" and isinstance(key, rsa.RSAPrivateKey):
        return key.sign(signing_input, padding.PKCS1v15(), _HASHES[bits]())
    if family == "PS" and isinstance(key, rsa.RSAPrivateKey):
        digest = _HASHES[bits]()
        return key.sign(signing_input, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
    if family == "ES" and isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(_HASHES[bits]())))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(signing_input)
    raise ValueError(f"cannot sign {alg} with {type(key).__name__}")


def compact(
    header: dict[str, Any] | bytes | str, payload: dict[str, Any] | bytes | str, signature: bytes
) -> str:
    """``header.payload.signature`` from the parts as given, nothing checked."""
    return f"{segment(header)}.{segment(payload)}.{b64(signature)}"


def forge(
    header: dict[str, Any] | bytes | str,
    payload: dict[str, Any] | bytes | str,
    key: PrivateKey,
    alg: str = "RS256",
) -> str:
    """A compact JWS over exactly these segments, signed with ``key`` under ``alg``.

    ``alg`` is the algorithm really used, which need not be what the header claims.
    """
    signing_input = f"{segment(header)}.{segment(payload)}".encode()
    return f"{signing_input.decode()}.{b64(sign(alg, key, signing_input))}"


def cluster_kid(cluster: Cluster) -> str:
    """The ``kid`` of the key auth signs with now."""
    return load_keys(cluster.keys_dir).active_kid(time.time())


def cluster_private_key(cluster: Cluster) -> rsa.RSAPrivateKey:
    """auth's real signing key, so a claims or header test differs from a real token in one thing only."""
    return _load_private_key(cluster.keys_dir / f"{cluster_kid(cluster)}.pem")


@functools.cache
def _load_private_key(path: Path) -> rsa.RSAPrivateKey:
    # Loading checks the RSA key, which costs more than a whole request: once per key file.
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def cluster_public_jwk(cluster: Cluster) -> dict[str, Any]:
    """The active key as the gateway publishes it: what any attacker can download."""
    response = http().get(f"{cluster.url}/.well-known/jwks.json")
    response.raise_for_status()
    kid = cluster_kid(cluster)
    (jwk,) = (entry for entry in response.json()["keys"] if entry["kid"] == kid)
    assert isinstance(jwk, dict)
    return jwk


def leeway(cluster: Cluster, target: str) -> int:
    """The clock leeway the target verifier runs with, read from the environment the cluster gives it."""
    return VerifierSettings.from_env(cluster.env_for(target)).leeway


def header(cluster: Cluster, **changes: Any) -> dict[str, Any]:
    """The protected header auth writes; ``name=DROP`` removes a member."""
    result: dict[str, Any] = {"alg": "RS256", "kid": cluster_kid(cluster), "typ": "at+jwt"}
    return _changed(result, changes)


def claims(cluster: Cluster, **changes: Any) -> dict[str, Any]:
    """A claim set as auth mints it for orders, issued now; ``name=DROP`` removes a claim."""
    now = int(time.time())
    result: dict[str, Any] = {
        "iss": cluster.public_origin,
        "sub": SUBJECT,
        "aud": "orders",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "client_id": "gateway-web",
        "sid": uuid.uuid4().hex,
        "role": "user",
    }
    return _changed(result, changes)


def _changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for name, value in changes.items():
        if value is DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def signed_by_cluster(cluster: Cluster, header_: dict[str, Any] | bytes | str, payload: Any) -> str:
    """A token over these exact segments with auth's real key and RS256."""
    return forge(header_, payload, cluster_private_key(cluster))


def target_url(cluster: Cluster, target: str) -> str:
    """The protected listing behind ``target``: ``/api/orders`` at the gateway, ``/orders`` at orders."""
    if target == "gateway":
        return f"{cluster.url}/api/orders"
    if target == "orders":
        return f"{cluster.service_url('orders')}/orders"
    raise ValueError(f"unknown target {target!r}")


def present(cluster: Cluster, target: str, token: str | bytes) -> httpx.Response:
    """``GET`` the target's protected listing with ``Authorization: Bearer <token>``."""
    value = b"Bearer " + (token.encode() if isinstance(token, str) else token)
    return http().get(target_url(cluster, target), headers={"Authorization": value})


@functools.cache
def http() -> httpx.Client:
    """One client (and connection pool) for the whole run: hundreds of cases, one TLS context."""
    client = httpx.Client(timeout=REQUEST_TIMEOUT)
    atexit.register(client.close)
    return client


def assert_rejected(response: httpx.Response, token: str | bytes) -> None:
    """401, the RFC 6750 challenge and the shared JSON error shape, and the token nowhere in the answer."""
    assert response.status_code == 401, (response.status_code, response.text[:300])
    assert response.headers.get("www-authenticate") == CHALLENGE, response.headers
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert body.get("error") == "invalid_token", body
    assert isinstance(body.get("detail"), str), body
    assert body["detail"], body
    assert_not_echoed(response, token)


def assert_not_echoed(response: httpx.Response, token: str | bytes) -> None:
    """No part of the token that identifies it (its signature or, unsigned, its payload) comes back."""
    raw = token.encode() if isinstance(token, str) else token
    parts = [part for part in raw.split(b".") if len(part) >= 16]
    answer = response.content + b"\n".join(f"{k}: {v}".encode() for k, v in response.headers.items())
    for part in parts or [raw]:
        if len(part) >= 16:
            assert part[:64] not in answer, "the answer echoes the token"


def assert_accepted(response: httpx.Response) -> None:
    """The control: the target answered the protected listing."""
    assert response.status_code == 200, (response.status_code, response.text[:300])
    assert isinstance(response.json().get("orders"), list), response.text[:300]
