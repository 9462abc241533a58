"""The signing key directory: creation, loading, signing, the public JWKS and every way loading fails."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import RSAKey

from services.auth.key_schedule import RotationPolicy
from services.auth.key_store import KeyFileError, create_key, init_keys, load_keys
from shared.core import TokenPolicy
from shared.web import JWKSCache, JWKSConfig, TokenVerifier

POLICY = RotationPolicy(token_ttl=300, clock_skew=10, jwks_max_age=300, reload_interval=5, margin=30)
CLAIMS = {"iss": "http://localhost:8000", "sub": "u1", "aud": "orders", "iat": 1, "exp": 301, "jti": "j1"}


def b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rfc7638_thumbprint(pem: bytes) -> str:
    """Computed from the PEM with cryptography alone, so it does not trust joserfc's answer."""
    private = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    numbers = private.public_key().public_numbers()
    canonical = json.dumps(
        {"e": b64url_uint(numbers.e), "kty": "RSA", "n": b64url_uint(numbers.n)}, separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_material_runs(pem: bytes) -> set[str]:
    """Every 16-character run of the key's base64 body and of its JWK members."""
    body = "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))
    texts = [body]
    try:
        jwk = RSAKey.import_key(pem).as_dict(private=True)
        texts += [value for value in jwk.values() if isinstance(value, str) and len(value) > 16]
    except Exception:  # noqa: S110 - garbage has no JWK form; its base64 body is still checked
        pass
    return {text[i : i + 16] for text in texts for i in range(len(text) - 15)}


def assert_error_names_file_without_material(
    directory: Path, expected_path: Path, pem: bytes | None = None
) -> str:
    with pytest.raises(KeyFileError) as caught:
        load_keys(directory)
    message = str(caught.value)
    assert str(expected_path) in message
    assert "BEGIN" not in message
    assert "PRIVATE" not in message
    if pem is not None:
        leaked = {run for run in key_material_runs(pem) if run in message}
        assert not leaked, f"the error quotes key material: {message!r}"
    return message


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


NOW = 1_000_000.0


def legacy_dir(directory: Path, *, extra: int = 0) -> tuple[str, list[str]]:
    """A directory in the layout from before keys.json: PEMs and an ``active`` file."""
    active = create_key(directory)
    others = [create_key(directory) for _ in range(extra)]
    (directory / "active").write_text(active + "\n")
    return active, others


class TestCreate:
    def test_create_key_writes_an_owner_only_pem_named_by_its_thumbprint(self, keys_dir: Path) -> None:
        kid = create_key(keys_dir)
        path = keys_dir / f"{kid}.pem"
        assert [p.name for p in keys_dir.iterdir()] == [path.name]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(keys_dir.stat().st_mode) & 0o077 == 0
        pem = path.read_bytes()
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
        assert kid == rfc7638_thumbprint(pem)

    def test_create_key_makes_2048_bit_keys_by_default(self, keys_dir: Path) -> None:
        kid = create_key(keys_dir)
        private = serialization.load_pem_private_key((keys_dir / f"{kid}.pem").read_bytes(), password=None)
        assert isinstance(private, rsa.RSAPrivateKey)
        assert private.key_size == 2048

    def test_init_keys_creates_a_key_active_from_now_in_the_schedule(self, keys_dir: Path) -> None:
        kid = init_keys(keys_dir, now=NOW)
        assert kid is not None
        assert (keys_dir / f"{kid}.pem").is_file()
        schedule = json.loads((keys_dir / "keys.json").read_text())
        assert schedule == {
            "version": 1,
            "keys": {kid: {"created_at": NOW, "activates_at": NOW, "retires_at": None, "removes_at": None}},
        }
        assert load_keys(keys_dir, now=NOW).active_kid(NOW) == kid

    def test_init_keys_is_idempotent(self, keys_dir: Path) -> None:
        first = init_keys(keys_dir)
        before = sorted(p.name for p in keys_dir.iterdir())
        assert init_keys(keys_dir) is None
        assert sorted(p.name for p in keys_dir.iterdir()) == before
        assert load_keys(keys_dir).active_kid(time.time()) == first


class TestLoadAndSign:
    def test_load_keys_round_trips_what_init_wrote(self, keys_dir: Path) -> None:
        kid = init_keys(keys_dir, now=NOW)
        keys = load_keys(keys_dir, now=NOW)
        assert keys.active_kid(NOW) == kid
        assert list(keys.keys) == [kid]
        assert keys.keys[kid].thumbprint() == kid

    def test_a_signed_token_verifies_with_the_published_public_key(self, keys_dir: Path) -> None:
        kid = init_keys(keys_dir, now=NOW)
        keys = load_keys(keys_dir, now=NOW)
        token = keys.sign(CLAIMS, NOW)
        (published,) = keys.jwks(NOW)["keys"]
        public = RSAKey.import_key(published)
        assert not public.is_private
        decoded = jwt.decode(token, public, algorithms=["RS256"])
        assert decoded.header == {"alg": "RS256", "kid": kid, "typ": "at+jwt"}
        assert decoded.claims == CLAIMS

    def test_a_signed_token_does_not_verify_with_another_key(self, keys_dir: Path) -> None:
        init_keys(keys_dir, now=NOW)
        token = load_keys(keys_dir, now=NOW).sign(CLAIMS, NOW)
        stranger = RSAKey.import_key(RSAKey.generate_key(2048).as_dict(private=False))
        with pytest.raises(BadSignatureError):
            jwt.decode(token, stranger, algorithms=["RS256"])

    def test_a_legacy_directory_loads_with_every_key_published_and_the_named_one_signing(
        self, keys_dir: Path
    ) -> None:
        active, (other,) = legacy_dir(keys_dir, extra=1)
        keys = load_keys(keys_dir, POLICY, now=NOW)
        assert keys.active_kid(NOW) == active
        assert {entry["kid"] for entry in keys.jwks(NOW)["keys"]} == {active, other}
        decoded = jwt.decode(keys.sign(CLAIMS, NOW), keys.keys[active], algorithms=["RS256"])
        assert decoded.header["kid"] == active
        with pytest.raises(BadSignatureError):
            jwt.decode(keys.sign(CLAIMS, NOW), keys.keys[other], algorithms=["RS256"])

    def test_jwks_holds_only_public_members(self, keys_dir: Path) -> None:
        kid = init_keys(keys_dir, now=NOW)
        keys = load_keys(keys_dir, now=NOW)
        (entry,) = keys.jwks(NOW)["keys"]
        assert set(entry) == {"kty", "n", "e", "kid", "alg", "use"}
        assert (entry["kty"], entry["alg"], entry["use"], entry["kid"]) == ("RSA", "RS256", "sig", kid)
        private = keys.keys[kid].as_dict(private=True)
        serialized = json.dumps(keys.jwks(NOW))
        for member in ("d", "p", "q", "dp", "dq", "qi"):
            assert private[member] not in serialized

    async def test_the_shared_verifier_accepts_a_token_signed_here(self, keys_dir: Path) -> None:
        init_keys(keys_dir, now=NOW)
        keys = load_keys(keys_dir, now=NOW)
        claims = {**CLAIMS, "iat": 1000, "nbf": 1000, "exp": 1300}

        def serve_jwks(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=keys.jwks(NOW))

        async with httpx.AsyncClient(transport=httpx.MockTransport(serve_jwks)) as client:
            cache = JWKSCache(JWKSConfig(url="http://127.0.0.1:8001/.well-known/jwks.json"), client)
            await cache.refresh()
            verifier = TokenVerifier(
                TokenPolicy("http://localhost:8000", "orders"), cache, clock=lambda: 1100
            )
            verified = await verifier.verify(keys.sign(claims, NOW))
        assert (verified.sub, verified.aud, verified.jti) == ("u1", "orders", "j1")


class TestLoadErrors:
    def test_a_missing_directory_is_named(self, keys_dir: Path) -> None:
        message = assert_error_names_file_without_material(keys_dir, keys_dir)
        assert "keys init" in message

    def test_an_empty_directory_is_named(self, keys_dir: Path) -> None:
        keys_dir.mkdir()
        message = assert_error_names_file_without_material(keys_dir, keys_dir)
        assert "no *.pem" in message

    def test_a_garbage_pem_is_named(self, keys_dir: Path) -> None:
        keys_dir.mkdir()
        garbage = (
            b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbCwganVzdCB0ZXh0\n-----END PRIVATE KEY-----\n"
        )
        path = keys_dir / "garbage.pem"
        path.write_bytes(garbage)
        assert_error_names_file_without_material(keys_dir, path, garbage)

    def test_a_truncated_pem_is_named_without_quoting_it(self, keys_dir: Path) -> None:
        pem = pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        truncated = pem[: len(pem) // 2]
        keys_dir.mkdir()
        path = keys_dir / "truncated.pem"
        path.write_bytes(truncated)
        assert_error_names_file_without_material(keys_dir, path, truncated)

    def test_a_public_key_only_pem_is_refused(self, keys_dir: Path) -> None:
        key = RSAKey.generate_key(2048)
        public_pem = key.as_pem(private=False)
        keys_dir.mkdir()
        path = keys_dir / f"{key.thumbprint()}.pem"
        path.write_bytes(public_pem)
        message = assert_error_names_file_without_material(keys_dir, path, public_pem)
        assert "no private key" in message

    def test_a_non_rsa_key_is_refused(self, keys_dir: Path) -> None:
        pem = pem_of(ec.generate_private_key(ec.SECP256R1()))
        keys_dir.mkdir()
        path = keys_dir / "ec.pem"
        path.write_bytes(pem)
        assert_error_names_file_without_material(keys_dir, path, pem)

    @pytest.mark.filterwarnings("ignore:Key size should be:UserWarning")
    def test_a_1024_bit_key_is_refused(self, keys_dir: Path) -> None:
        pem = pem_of(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - the weak key under test
        keys_dir.mkdir()
        # Named by its own thumbprint, so only the size can be what is wrong.
        path = keys_dir / f"{rfc7638_thumbprint(pem)}.pem"
        path.write_bytes(pem)
        (keys_dir / "active").write_text(path.stem)
        message = assert_error_names_file_without_material(keys_dir, path, pem)
        assert "1024 bits" in message
        assert "2048" in message

    def test_a_file_not_named_by_its_thumbprint_is_refused(self, keys_dir: Path) -> None:
        kid, _ = legacy_dir(keys_dir)
        renamed = keys_dir / "my-key.pem"
        (keys_dir / f"{kid}.pem").rename(renamed)
        (keys_dir / "active").write_text("my-key")
        message = assert_error_names_file_without_material(keys_dir, renamed, renamed.read_bytes())
        assert "thumbprint" in message

    def test_a_missing_active_file_is_named(self, keys_dir: Path) -> None:
        kid = create_key(keys_dir)
        pem = (keys_dir / f"{kid}.pem").read_bytes()
        assert_error_names_file_without_material(keys_dir, keys_dir / "active", pem)

    def test_an_active_file_naming_an_absent_kid_is_named(self, keys_dir: Path) -> None:
        kid = create_key(keys_dir)
        pem = (keys_dir / f"{kid}.pem").read_bytes()
        (keys_dir / "active").write_text("no-such-kid\n")
        message = assert_error_names_file_without_material(keys_dir, keys_dir / "active", pem)
        assert "no-such-kid" in message

    def test_one_bad_file_spoils_the_directory(self, keys_dir: Path) -> None:
        init_keys(keys_dir)
        path = keys_dir / "zz-broken.pem"
        path.write_bytes(b"not a key")
        assert_error_names_file_without_material(keys_dir, path)


def test_key_material_runs_finds_a_quoted_key() -> None:
    # Guards the guard: the leak check must notice a message that quotes the key.
    pem = RSAKey.generate_key(2048).as_pem(private=True)
    body_line = pem.decode().splitlines()[5]
    assert any(run in f"bad key {body_line}" for run in key_material_runs(pem))
    assert re.search(r"[A-Za-z0-9+/]{16}", body_line)
