"""Header tricks: a token that brings its own key, points at one, or abuses ``kid``, ``crit`` or ``typ``.

Tokens that only bend a header member are signed with auth's real key, so nothing but that
member is wrong. Keys that the header brings along (``jwk``, ``jku``, ``x5u``, ``x5c``) belong
to the attacker, whose JWKS server on loopback counts requests: no verifier may ever call it.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from deploy.devcluster import Cluster

from .attacker_server import AttackerServer, attacker_server, jwks
from .forge import (
    DROP,
    TARGETS,
    assert_accepted,
    assert_rejected,
    b64,
    claims,
    cluster_kid,
    cluster_public_jwk,
    forge,
    header,
    present,
    signed_by_cluster,
)

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("target", TARGETS)]

ATTACKER_KID = "attacker-key-1"


@pytest.fixture(scope="module")
def attacker_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64(n), "e": b64(e)}


@pytest.fixture(scope="module")
def attacker_jwks(attacker_rsa: rsa.RSAPrivateKey) -> Iterator[AttackerServer]:
    """The attacker's JWKS on loopback, holding the attacker's key under its own kid and under auth's."""
    document = {"keys": [_public_jwk(attacker_rsa, ATTACKER_KID)]}
    with attacker_server(jwks(document)) as server:
        yield server


@pytest.fixture(scope="module")
def attacker_certificate(attacker_rsa: rsa.RSAPrivateKey) -> str:
    """A self-signed certificate for the attacker's key, base64 DER as ``x5c`` carries it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auth")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(attacker_rsa.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(attacker_rsa, hashes.SHA256())
    )
    return base64.b64encode(certificate.public_bytes(Encoding.DER)).decode()


def assert_never_fetched(server: AttackerServer, path: str) -> None:
    """Nothing asked the attacker for ``path``; then the test asks, proving that a fetch is counted."""
    assert server.hits(path) == 0, f"a verifier fetched {path} named in a token header"
    assert httpx.get(server.url + path, timeout=5).status_code == 200
    assert server.hits(path) == 1


def test_control_a_token_with_auth_header_and_the_real_key_is_accepted(cluster: Cluster, target: str) -> None:
    assert_accepted(present(cluster, target, signed_by_cluster(cluster, header(cluster), claims(cluster))))


@pytest.mark.parametrize("kid", ["attacker", "auth's"])
def test_embedded_jwk_with_the_attacker_key(
    cluster: Cluster, target: str, attacker_rsa: rsa.RSAPrivateKey, kid: str
) -> None:
    key_id = ATTACKER_KID if kid == "attacker" else cluster_kid(cluster)
    token_header = header(cluster, kid=key_id, jwk=_public_jwk(attacker_rsa, key_id))
    token = forge(token_header, claims(cluster), attacker_rsa)

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize("member", ["jku", "x5u"])
@pytest.mark.parametrize("kid", ["attacker", "auth's"])
def test_key_url_pointing_at_the_attacker(
    cluster: Cluster,
    target: str,
    attacker_rsa: rsa.RSAPrivateKey,
    attacker_jwks: AttackerServer,
    member: str,
    kid: str,
) -> None:
    key_id = ATTACKER_KID if kid == "attacker" else cluster_kid(cluster)
    path = f"/{member}-{uuid.uuid4().hex}.json"
    token = forge(
        header(cluster, kid=key_id, **{member: attacker_jwks.url + path}), claims(cluster), attacker_rsa
    )

    assert_rejected(present(cluster, target, token), token)
    assert_never_fetched(attacker_jwks, path)


def test_x5c_with_the_attacker_certificate(
    cluster: Cluster,
    target: str,
    attacker_rsa: rsa.RSAPrivateKey,
    attacker_certificate: str,
    attacker_jwks: AttackerServer,
) -> None:
    path = f"/chain-{uuid.uuid4().hex}.pem"
    token_header = header(cluster, x5c=[attacker_certificate], x5u=attacker_jwks.url + path)
    token = forge(token_header, claims(cluster), attacker_rsa)

    assert_rejected(present(cluster, target, token), token)
    assert_never_fetched(attacker_jwks, path)


KID_INJECTIONS = [
    pytest.param("../../etc/passwd", id="path traversal to /etc/passwd"),
    pytest.param("../../../../../../../../dev/null", id="path traversal to /dev/null"),
    pytest.param("/dev/null", id="absolute /dev/null"),
    pytest.param("file:///dev/null", id="file URL"),
    pytest.param("' OR '1'='1", id="SQL tautology"),
    pytest.param("x' UNION SELECT 'secret' --", id="SQL union"),
    pytest.param("kid\x00", id="trailing null byte"),
    pytest.param("\x00", id="only a null byte"),
    pytest.param("${jndi:ldap://127.0.0.1/a}", id="JNDI lookup"),
    pytest.param("| cat /etc/passwd", id="shell pipe"),
    pytest.param("%2e%2e%2f%2e%2e%2fetc%2fpasswd", id="URL-encoded traversal"),
    pytest.param("__proto__", id="prototype key"),
    pytest.param("\ud800", id="lone surrogate"),
    pytest.param("\u2028\r\n{}", id="line separators"),
    pytest.param("\u202e" + "kid", id="right-to-left override"),
    pytest.param("k" * 129, id="129 characters"),
    pytest.param("k" * 3000, id="3000 characters"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("kid", KID_INJECTIONS)
def test_kid_injection(cluster: Cluster, target: str, attacker_rsa: rsa.RSAPrivateKey, kid: str) -> None:
    token = forge(header(cluster, kid=kid), claims(cluster), attacker_rsa)

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize("kid", ["/dev/null", "../../../../dev/null", ""])
def test_kid_naming_an_empty_file_with_hs256_and_an_empty_secret(
    cluster: Cluster, target: str, kid: str
) -> None:
    # A verifier that reads kid as a file path HMACs with the file's contents: nothing, for /dev/null.
    token = forge(header(cluster, alg="HS256", kid=kid), claims(cluster), b"", alg="HS256")

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "kid_of",
    [
        pytest.param(lambda real: 1, id="number"),
        pytest.param(lambda real: 0, id="zero"),
        pytest.param(lambda real: True, id="boolean"),
        pytest.param(lambda real: None, id="null"),
        pytest.param(lambda real: [real], id="list holding the real kid"),
        pytest.param(lambda real: {"kid": real}, id="object holding the real kid"),
    ],
)
def test_kid_that_is_not_a_string(cluster: Cluster, target: str, kid_of: Any) -> None:
    token = signed_by_cluster(cluster, header(cluster, kid=kid_of(cluster_kid(cluster))), claims(cluster))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "kid_of",
    [
        pytest.param(lambda real: uuid.uuid4().hex, id="random"),
        pytest.param(lambda real: real.upper() if real != real.upper() else real.lower(), id="case changed"),
        pytest.param(lambda real: real + " ", id="trailing space"),
        pytest.param(lambda real: real[:-1], id="one character short"),
        pytest.param(lambda real: DROP, id="missing"),
    ],
)
def test_unknown_or_missing_kid_with_the_real_key(cluster: Cluster, target: str, kid_of: Any) -> None:
    # The real key signed it: only the kid is wrong. A KeySet hands a kid-less token its only key.
    token = signed_by_cluster(cluster, header(cluster, kid=kid_of(cluster_kid(cluster))), claims(cluster))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"crit": ["exp"], "exp": 1}, id="crit listing a member"),
        pytest.param({"crit": []}, id="crit empty"),
        pytest.param({"crit": ["b64"], "b64": False}, id="crit b64 false"),
        pytest.param({"crit": ["kid"]}, id="crit naming a registered member"),
        pytest.param({"crit": "exp"}, id="crit not a list"),
    ],
)
def test_crit(cluster: Cluster, target: str, extra: dict[str, Any]) -> None:
    token = signed_by_cluster(cluster, header(cluster, **extra), claims(cluster))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"cty": "JWT"}, id="cty JWT (nested token)"),
        pytest.param({"zip": "DEF"}, id="zip"),
        pytest.param({"b64": True}, id="b64"),
        pytest.param({"x5t": b64(b"0" * 20)}, id="x5t"),
        pytest.param({"x5t#S256": b64(b"0" * 32)}, id="x5t#S256"),
        pytest.param({"enc": "A256GCM"}, id="enc"),
        pytest.param({"url": "http://127.0.0.1/", "nonce": "n"}, id="url and nonce"),
        pytest.param({"iss": "http://localhost:8000"}, id="a claim in the header"),
        pytest.param({"foo": "bar"}, id="made-up member"),
    ],
)
def test_unexpected_header_member(cluster: Cluster, target: str, extra: dict[str, Any]) -> None:
    token = signed_by_cluster(cluster, header(cluster, **extra), claims(cluster))

    assert_rejected(present(cluster, target, token), token)


def test_embedded_jwk_of_the_real_key(cluster: Cluster, target: str) -> None:
    # Even the true public key is refused in the header: keys come from the JWKS alone.
    token = signed_by_cluster(cluster, header(cluster, jwk=cluster_public_jwk(cluster)), claims(cluster))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "typ",
    [
        pytest.param(DROP, id="missing"),
        pytest.param("JWT", id="JWT"),
        pytest.param("jwt", id="jwt"),
        pytest.param("", id="empty"),
        pytest.param("at+jwt ", id="trailing space"),
        pytest.param("dpop+jwt", id="DPoP proof"),
        pytest.param("logout+jwt", id="logout token"),
        pytest.param(None, id="null"),
        pytest.param(1, id="number"),
        pytest.param(["at+jwt"], id="list"),
    ],
)
def test_wrong_or_missing_typ(cluster: Cluster, target: str, typ: Any) -> None:
    token = signed_by_cluster(cluster, header(cluster, typ=typ), claims(cluster))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "alg",
    [
        pytest.param(DROP, id="missing"),
        pytest.param(["RS256"], id="list"),
        pytest.param("rs256", id="lower case"),
        pytest.param("RS256 ", id="trailing space"),
        pytest.param(None, id="null"),
    ],
)
def test_malformed_alg_with_the_real_key(cluster: Cluster, target: str, alg: Any) -> None:
    token = signed_by_cluster(cluster, header(cluster, alg=alg), claims(cluster))

    assert_rejected(present(cluster, target, token), token)


def test_header_that_is_not_an_object(cluster: Cluster, target: str) -> None:
    token = signed_by_cluster(cluster, json.dumps(["RS256", cluster_kid(cluster), "at+jwt"]), claims(cluster))

    assert_rejected(present(cluster, target, token), token)
