"""The signing key set: RSA private keys in a directory, one of them active.

Layout: ``<dir>/<kid>.pem`` (PKCS#8, mode 0600) and ``<dir>/active`` naming the signing kid.
The kid is the key's RFC 7638 thumbprint, so it cannot disagree with the key it names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from shared.jwks import MIN_RSA_BITS as MIN_BITS
from shared.tokens import ALGORITHM, TOKEN_TYPE

ACTIVE_FILE = "active"


class KeyFileError(Exception):
    """The key directory is unusable; the message names the file."""


@dataclass(frozen=True)
class SigningKeys:
    """Every published key by kid, and the one that signs."""

    keys: dict[str, RSAKey]
    active_kid: str

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": ALGORITHM, "kid": self.active_kid, "typ": TOKEN_TYPE}
        return jwt.encode(header, claims, self.keys[self.active_kid], algorithms=[ALGORITHM])

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public JWKS: only kty, n, e, kid, alg and use, never a private member."""
        published = []
        for kid, key in sorted(self.keys.items()):
            public = key.as_dict(private=False)
            published.append(
                {"kty": "RSA", "n": public["n"], "e": public["e"], "kid": kid, "alg": ALGORITHM, "use": "sig"}
            )
        return {"keys": published}


def load_key(path: Path) -> tuple[str, RSAKey]:
    """One private key file, validated; its kid is its thumbprint."""
    try:
        key = RSAKey.import_key(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except Exception:  # the parser's message may quote key material, so it is not repeated
        raise KeyFileError(f"{path}: not a PEM RSA private key") from None
    if key.private_key is None:
        raise KeyFileError(f"{path}: holds no private key")
    if key.raw_value.key_size < MIN_BITS:
        raise KeyFileError(f"{path}: RSA key is {key.raw_value.key_size} bits, at least {MIN_BITS} required")
    kid = key.thumbprint()
    if path.stem != kid:
        raise KeyFileError(f"{path}: file name does not match the key's thumbprint {kid}")
    return kid, key


def load_keys(directory: Path) -> SigningKeys:
    """Every key in ``directory`` and the active one, or :class:`KeyFileError` naming what is wrong."""
    if not directory.is_dir():
        raise KeyFileError(
            f"{directory}: key directory does not exist (run: python -m services.auth keys init)"
        )
    keys = dict(load_key(path) for path in sorted(directory.glob("*.pem")))
    if not keys:
        raise KeyFileError(f"{directory}: no *.pem keys (run: python -m services.auth keys init)")
    active_path = directory / ACTIVE_FILE
    try:
        active = active_path.read_text().strip()
    except OSError:
        raise KeyFileError(f"{active_path}: missing; it must name the signing kid") from None
    if active not in keys:
        raise KeyFileError(f"{active_path}: names {active!r}, which is not a key in {directory}")
    return SigningKeys(keys=keys, active_kid=active)


def create_key(directory: Path, *, bits: int = MIN_BITS, activate: bool) -> str:
    """Generate a key, write it readable by the owner only, and return its kid."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = RSAKey.generate_key(bits)
    kid = key.thumbprint()
    path = directory / f"{kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.as_pem(private=True))
    if activate:
        (directory / ACTIVE_FILE).write_text(kid + "\n")
    return kid


def init_keys(directory: Path) -> str | None:
    """Create and activate a first key unless the directory already has one; the new kid or None."""
    if directory.is_dir() and any(directory.glob("*.pem")):
        return None
    return create_key(directory, activate=True)
