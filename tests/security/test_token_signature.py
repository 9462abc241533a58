"""Signature and algorithm attacks: every way to get a token past a verifier without auth's private key.

Each attack runs against the gateway and against orders on its own port. The controls at the
top prove that the same targets accept a real token and one forged with the real key, so every
rejection below is the verifier's doing and not a broken test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from deploy.devcluster import Cluster
from tests.support.cluster import Browser

from .forge import (
    TARGETS,
    assert_accepted,
    assert_rejected,
    claims,
    cluster_private_key,
    cluster_public_jwk,
    compact,
    forge,
    header,
    present,
    segment,
    signed_by_cluster,
)

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("target", TARGETS)]

NONE_SPELLINGS = ["none", "None", "NONE", "nOnE"]


@pytest.fixture(scope="module")
def attacker_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_control_a_token_minted_by_auth_is_accepted(cluster: Cluster, browser: Browser, target: str) -> None:
    token = browser.token(browser.login())

    assert_accepted(present(cluster, target, token))


def test_control_a_token_forged_with_the_real_key_is_accepted(cluster: Cluster, target: str) -> None:
    assert_accepted(present(cluster, target, signed_by_cluster(cluster, header(cluster), claims(cluster))))


@pytest.mark.parametrize("alg", NONE_SPELLINGS)
@pytest.mark.parametrize("signature", ["empty", "absent", "the original one"])
def test_alg_none(cluster: Cluster, target: str, alg: str, signature: str) -> None:
    unsigned = f"{segment(header(cluster, alg=alg))}.{segment(claims(cluster))}"
    original = signed_by_cluster(cluster, header(cluster), claims(cluster)).rsplit(".", 1)[1]
    forms = {"empty": f"{unsigned}.", "absent": unsigned, "the original one": f"{unsigned}.{original}"}
    token = forms[signature]

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda sig: "", id="empty"),
        pytest.param(lambda sig: sig[:-1], id="last character dropped"),
        pytest.param(lambda sig: sig[:-4], id="last three bytes dropped"),
        pytest.param(lambda sig: sig[: len(sig) // 2], id="half"),
        pytest.param(lambda sig: sig[:1], id="one character"),
    ],
)
def test_truncated_signature(cluster: Cluster, target: str, cut: Callable[[str], str]) -> None:
    signing_input, signature = signed_by_cluster(cluster, header(cluster), claims(cluster)).rsplit(".", 1)
    token = f"{signing_input}.{cut(signature)}"

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"sub": "someone-else"}, id="another subject"),
        pytest.param({"role": "admin"}, id="role raised to admin"),
        pytest.param({"exp_delta": 3600}, id="expiry pushed back"),
        pytest.param({"aud": "auth"}, id="another audience"),
    ],
)
def test_claims_changed_under_the_original_signature(
    cluster: Cluster, browser: Browser, target: str, change: dict[str, object]
) -> None:
    # A token auth really minted, with its payload swapped for an edited copy.
    real = browser.token(browser.login())
    head, payload, signature = real.split(".")
    edited = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for name, value in change.items():
        if name == "exp_delta":
            assert isinstance(value, int)
            edited["exp"] += value
        else:
            edited[name] = value
    token = f"{head}.{segment(edited)}.{signature}"

    assert_rejected(present(cluster, target, token), token)


def test_signature_of_another_token_spliced_in(cluster: Cluster, target: str) -> None:
    donor = signed_by_cluster(cluster, header(cluster), claims(cluster, sub="donor"))
    victim = signed_by_cluster(cluster, header(cluster), claims(cluster, sub="victim"))
    signing_input = victim.rsplit(".", 1)[0]
    token = f"{signing_input}.{donor.rsplit('.', 1)[1]}"

    assert_rejected(present(cluster, target, token), token)


def _public_key(cluster: Cluster) -> rsa.RSAPublicKey:
    return cluster_private_key(cluster).public_key()


_PUBLIC_FORMS: dict[str, Callable[[Cluster], bytes]] = {
    "PEM (SubjectPublicKeyInfo)": lambda c: _public_key(c).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ),
    "PEM without its final newline": lambda c: (
        _public_key(c)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .rstrip(b"\n")
    ),
    "PEM (PKCS#1)": lambda c: _public_key(c).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    ),
    "DER (SubjectPublicKeyInfo)": lambda c: _public_key(c).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ),
    "DER (PKCS#1)": lambda c: _public_key(c).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    ),
    "JWK JSON as published": lambda c: json.dumps(cluster_public_jwk(c)).encode(),
    "JWK JSON compact": lambda c: json.dumps(cluster_public_jwk(c), separators=(",", ":")).encode(),
    "n as base64url text": lambda c: str(cluster_public_jwk(c)["n"]).encode(),
    "n as raw bytes": lambda c: _public_key(c).public_numbers().n.to_bytes(256, "big"),
}


@pytest.mark.parametrize("form", list(_PUBLIC_FORMS))
def test_hs256_signed_with_the_public_key(cluster: Cluster, target: str, form: str) -> None:
    # The classic key confusion: a verifier that lets the header pick the algorithm HMACs with the public key.
    secret = _PUBLIC_FORMS[form](cluster)
    token = forge(header(cluster, alg="HS256"), claims(cluster), secret, alg="HS256")

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_signed_with_the_public_key_pem(cluster: Cluster, target: str, alg: str) -> None:
    secret = _PUBLIC_FORMS["PEM (SubjectPublicKeyInfo)"](cluster)
    token = forge(header(cluster, alg=alg), claims(cluster), secret, alg=alg)

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS512"])
def test_signed_with_an_attacker_rsa_key(
    cluster: Cluster, target: str, attacker_rsa: rsa.RSAPrivateKey, alg: str
) -> None:
    # The header names auth's real kid, so the verifier finds a key and must check the signature.
    token = forge(header(cluster, alg=alg), claims(cluster), attacker_rsa, alg=alg)

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256"])
def test_other_algorithm_signed_with_the_real_key(cluster: Cluster, target: str, alg: str) -> None:
    # Even a valid signature by the real key is refused under any algorithm but RS256.
    token = forge(header(cluster, alg=alg), claims(cluster), cluster_private_key(cluster), alg=alg)

    assert_rejected(present(cluster, target, token), token)


def test_es256_with_a_zero_signature(cluster: Cluster, target: str) -> None:
    # CVE-2022-21449 ("psychic signatures"): r = s = 0 verified against any ECDSA key in some JDKs.
    token = compact(header(cluster, alg="ES256"), claims(cluster), bytes(64))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize("alg", ["ES256", "ES384"])
def test_signed_with_an_attacker_ec_key(cluster: Cluster, target: str, alg: str) -> None:
    curve: ec.EllipticCurve = ec.SECP256R1() if alg == "ES256" else ec.SECP384R1()
    token = forge(header(cluster, alg=alg), claims(cluster), ec.generate_private_key(curve), alg=alg)

    assert_rejected(present(cluster, target, token), token)


def test_eddsa_signed_with_an_attacker_key(cluster: Cluster, target: str) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    token = forge(header(cluster, alg="EdDSA"), claims(cluster), key, alg="EdDSA")

    assert_rejected(present(cluster, target, token), token)


def test_rs256_claimed_but_hs256_used_with_the_public_key(cluster: Cluster, target: str) -> None:
    # The header is honest-looking; the signature is an HMAC. Only a real RSA check notices.
    secret = _PUBLIC_FORMS["PEM (SubjectPublicKeyInfo)"](cluster)
    token = forge(header(cluster), claims(cluster), secret, alg="HS256")

    assert_rejected(present(cluster, target, token), token)


def test_rs256_with_an_all_zero_signature(cluster: Cluster, target: str) -> None:
    token = compact(header(cluster), claims(cluster), bytes(256))

    assert_rejected(present(cluster, target, token), token)
