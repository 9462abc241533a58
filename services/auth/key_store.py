"""The key directory: its file layout, locked atomic changes, legacy migration, and auth's hot-reloading view.

Layout: ``<dir>/<kid>.pem`` (PKCS#8, mode 0600; the kid is the key's RFC 7638 thumbprint, so
it cannot disagree with the key it names) and ``<dir>/keys.json``, the schedule whose rules
live in ``key_schedule``. Only the CLI writes the directory (atomically, under a lock); auth
only reads it.

A directory from before the schedule existed (``<kid>.pem`` files and an ``active`` file naming
the signing kid) still loads: every key is published and the named one signs. The first CLI
change writes ``keys.json`` for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jws, jwt
from joserfc.jwk import RSAKey

from services.auth.key_schedule import (
    KeyState,
    KeyTimes,
    RotationPolicy,
    Schedule,
    ScheduleError,
    active_kid,
    check_schedule,
    plan_retirement,
    plan_rotation,
    unremoved,
)
from shared.core import ALGORITHM, TOKEN_TYPE, loads_strict
from shared.web import MIN_RSA_BITS

logger = logging.getLogger(__name__)

SCHEDULE_FILE = "keys.json"
LEGACY_ACTIVE_FILE = "active"
LOCK_FILE = ".lock"
SCHEDULE_VERSION = 1


class KeyFileError(Exception):
    """The key directory is unusable; the message names the file."""


@dataclass(frozen=True)
class Keyring:
    """Every key file of one directory by kid, and the schedule that says which are published."""

    keys: dict[str, RSAKey]
    schedule: Schedule

    def active_kid(self, now: float) -> str:
        kid = active_kid(self.schedule, now)
        if kid is None or kid not in self.keys:
            # check_schedule made sure of a signer from load time on; only a clock that jumped
            # back before the first key's activation gets here.
            raise KeyFileError("no signing key is active at this time")
        return kid

    def published(self, now: float) -> list[str]:
        """Kids in the JWKS at ``now``: next, active and retired keys."""
        return sorted(
            kid
            for kid, times in self.schedule.items()
            if kid in self.keys and times.state(now) is not KeyState.REMOVED
        )

    def sign(self, claims: dict[str, Any], now: float) -> str:
        kid = self.active_kid(now)
        header = {"alg": ALGORITHM, "kid": kid, "typ": TOKEN_TYPE}
        return jwt.encode(header, claims, self.keys[kid], algorithms=[ALGORITHM])

    def sign_payload(self, payload: bytes, now: float, *, typ: str) -> tuple[str, str]:
        """A compact JWS of an encoded payload and another ``typ`` (the revocation feed), and its kid."""
        kid = self.active_kid(now)
        header = {"alg": ALGORITHM, "kid": kid, "typ": typ}
        return jws.serialize_compact(header, payload, self.keys[kid], algorithms=[ALGORITHM]), kid

    def jwks(self, now: float) -> dict[str, list[dict[str, Any]]]:
        """The public JWKS: only kty, n, e, kid, alg and use, never a private member."""
        published = []
        for kid in self.published(now):
            public = self.keys[kid].as_dict(private=False)
            published.append(
                {"kty": "RSA", "n": public["n"], "e": public["e"], "kid": kid, "alg": ALGORITHM, "use": "sig"}
            )
        return {"keys": published}

    def states(self, now: float) -> dict[str, KeyState]:
        return {kid: times.state(now) for kid, times in self.schedule.items()}


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
    if key.raw_value.key_size < MIN_RSA_BITS:
        raise KeyFileError(
            f"{path}: RSA key is {key.raw_value.key_size} bits, at least {MIN_RSA_BITS} required"
        )
    kid = key.thumbprint()
    if path.stem != kid:
        raise KeyFileError(f"{path}: file name does not match the key's thumbprint {kid}")
    return kid, key


def read_schedule(directory: Path) -> Schedule:
    """The schedule in ``keys.json``, or one derived from a legacy ``active`` file."""
    path = directory / SCHEDULE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _legacy_schedule(directory)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        document = loads_strict(raw)
        if not isinstance(document, dict) or document.get("version") != SCHEDULE_VERSION:
            raise ValueError(f"version must be {SCHEDULE_VERSION}")
        entries = document["keys"]
        if not isinstance(entries, dict) or not entries:
            raise ValueError("keys must be a non-empty object")
        return {str(kid): _times(entry) for kid, entry in entries.items()}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: not a valid key schedule ({exc})") from None


def _times(entry: Any) -> KeyTimes:
    if not isinstance(entry, dict):
        raise ValueError("each key must be an object")

    def number(name: str) -> float:
        value = entry.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ValueError(f"{name} must be a number")
        return float(value)

    def optional(name: str) -> float | None:
        return None if entry.get(name) is None else number(name)

    return KeyTimes(
        created_at=number("created_at"),
        activates_at=number("activates_at"),
        retires_at=optional("retires_at"),
        removes_at=optional("removes_at"),
    )


def _legacy_schedule(directory: Path) -> Schedule:
    """Before ``keys.json``: every ``*.pem`` published, the one named in ``active`` signing."""
    pems = sorted(directory.glob("*.pem"))
    if not pems:
        raise KeyFileError(f"{directory}: no *.pem keys (run: python -m services.auth keys init)")
    active_path = directory / LEGACY_ACTIVE_FILE
    try:
        active = active_path.read_text().strip()
    except OSError:
        raise KeyFileError(f"{active_path}: missing; it must name the signing kid") from None
    kids = {path.stem for path in pems}
    if active not in kids:
        raise KeyFileError(f"{active_path}: names {active!r}, which is not a key in {directory}")
    # The others were published beside the active key and may have signed once: keep them
    # published as retired until an operator's next change schedules their removal.
    return {
        kid: KeyTimes(created_at=0.0, activates_at=0.0, retires_at=None if kid == active else 0.0)
        for kid in kids
    }


def load_keys(directory: Path, policy: RotationPolicy | None = None, *, now: float | None = None) -> Keyring:
    """Every key and the schedule, or :class:`KeyFileError` naming what is wrong.

    Every ``*.pem`` is validated, scheduled or not: a broken file is an error, never skipped.
    """
    if not directory.is_dir():
        raise KeyFileError(
            f"{directory}: key directory does not exist (run: python -m services.auth keys init)"
        )
    now = time.time() if now is None else now
    keys = dict(load_key(path) for path in sorted(directory.glob("*.pem")))
    schedule = read_schedule(directory)
    source = directory / (SCHEDULE_FILE if (directory / SCHEDULE_FILE).exists() else LEGACY_ACTIVE_FILE)
    for kid, times in schedule.items():
        if kid not in keys and times.state(now) is not KeyState.REMOVED:
            raise KeyFileError(f"{directory / (kid + '.pem')}: missing; {source.name} schedules key {kid}")
    try:
        check_schedule(schedule, policy, now)
    except ScheduleError as exc:
        raise KeyFileError(f"{source}: {exc}") from None
    return Keyring(keys=keys, schedule=schedule)


def create_key(directory: Path, *, bits: int = MIN_RSA_BITS) -> str:
    """Generate a key, write it readable by the owner only, and return its kid (not yet scheduled)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = RSAKey.generate_key(bits)
    kid = key.thumbprint()
    # Written under a name auth ignores, then linked into place: a reload never sees half a key.
    temporary = directory / f".{kid}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.as_pem(private=True))
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, directory / f"{kid}.pem")
    finally:
        temporary.unlink()
    return kid


def write_schedule(directory: Path, schedule: Schedule) -> None:
    """Replace ``keys.json`` atomically: a reader sees the old schedule or the new one, never half."""
    document = {
        "version": SCHEDULE_VERSION,
        "keys": {kid: times.as_dict() for kid, times in sorted(schedule.items())},
    }
    path = directory / SCHEDULE_FILE
    temporary = directory / f".{SCHEDULE_FILE}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Serialise CLI changes to one directory, so two concurrent rotations cannot both win."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _commit(directory: Path, schedule: Schedule, policy: RotationPolicy, now: float) -> None:
    """Write ``schedule`` without its removed keys, then delete the files no schedule names."""
    kept = unremoved(schedule, now)
    try:
        check_schedule(kept, policy, now)
    except ScheduleError as exc:
        raise ScheduleError(f"refusing to write {directory / SCHEDULE_FILE}: {exc}") from None
    write_schedule(directory, kept)
    with contextlib.suppress(FileNotFoundError):
        (directory / LEGACY_ACTIVE_FILE).unlink()
    # Only after the schedule stopped naming them; we hold the lock, so no rotation is half-done.
    for path in directory.glob("*.pem"):
        if path.stem not in kept:
            path.unlink()


def init_keys(directory: Path, *, now: float | None = None) -> str | None:
    """Create and activate a first key unless the directory already has one; the new kid or None."""
    with locked(directory):
        if (directory / SCHEDULE_FILE).exists() or any(directory.glob("*.pem")):
            return None
        kid = create_key(directory)
        moment = time.time() if now is None else now
        write_schedule(directory, {kid: KeyTimes(created_at=moment, activates_at=moment)})
        return kid


def rotate_keys(directory: Path, policy: RotationPolicy, *, now: float | None = None) -> str:
    """Publish a new key that takes over signing after ``policy.publish_lead``; its kid."""
    with locked(directory):
        moment = time.time() if now is None else now
        load_keys(directory, now=moment)
        schedule = read_schedule(directory)
        plan_rotation(schedule, "planned", policy, moment)  # refuse before generating a key
        kid = create_key(directory)
        try:
            _commit(directory, plan_rotation(schedule, kid, policy, moment), policy, moment)
        except BaseException:
            (directory / f"{kid}.pem").unlink()
            raise
        return kid


def retire_key(
    directory: Path, kid: str, policy: RotationPolicy, *, force: bool, now: float | None = None
) -> Schedule:
    """End ``kid``'s life (see :func:`plan_retirement`); the schedule written."""
    with locked(directory):
        moment = time.time() if now is None else now
        load_keys(directory, now=moment)
        planned = plan_retirement(read_schedule(directory), kid, moment, force=force)
        _commit(directory, planned, policy, moment)
        return unremoved(planned, moment)


class KeyStore:
    """The key directory as auth sees it: loaded at start-up, reloaded when its files change.

    A reload that finds a broken directory keeps the last good keyring and records the error,
    so a half-copied file never takes down signing; at start-up the same error is fatal.
    """

    def __init__(self, directory: Path, policy: RotationPolicy, *, clock: Callable[[], float] = time.time):
        self.directory = directory
        self.policy = policy
        self._clock = clock
        self._fingerprint = self._read_fingerprint()
        self.keyring = load_keys(directory, policy, now=clock())
        self.loaded_at = clock()
        self.reloads = 0
        self.reload_failures = 0
        self.last_error: str | None = None
        self.tokens_signed = 0

    def _read_fingerprint(self) -> tuple[tuple[str, int, int, int], ...]:
        entries = []
        try:
            with os.scandir(self.directory) as scan:
                for entry in scan:
                    if entry.name.endswith(".pem") or entry.name in (SCHEDULE_FILE, LEGACY_ACTIVE_FILE):
                        info = entry.stat()
                        entries.append((entry.name, info.st_mtime_ns, info.st_size, info.st_ino))
        except OSError:
            return ()
        return tuple(sorted(entries))

    def reload_if_changed(self) -> bool:
        """Reload when a key file or the schedule changed; whether a new keyring is in use."""
        fingerprint = self._read_fingerprint()
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            keyring = load_keys(self.directory, self.policy, now=self._clock())
        except KeyFileError as exc:
            self.reload_failures += 1
            self.last_error = str(exc)
            logger.error("key directory reload failed; still signing with the last good keys: %s", exc)
            return False
        self.keyring = keyring
        self.loaded_at = self._clock()
        self.reloads += 1
        self.last_error = None
        logger.info(
            "reloaded signing keys: active %s, published %s",
            keyring.active_kid(self._clock()),
            ", ".join(keyring.published(self._clock())),
        )
        return True

    def sign(self, claims: dict[str, Any]) -> str:
        token = self.keyring.sign(claims, self._clock())
        self.tokens_signed += 1
        return token

    def sign_payload(self, payload: bytes, *, typ: str) -> tuple[str, str]:
        """A JWS of another ``typ`` than an access token (the revocation feed), not counted as a token."""
        return self.keyring.sign_payload(payload, self._clock(), typ=typ)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return self.keyring.jwks(self._clock())

    def states(self) -> dict[str, KeyState]:
        return self.keyring.states(self._clock())

    @property
    def ready(self) -> bool:
        try:
            self.keyring.active_kid(self._clock())
        except KeyFileError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        """Readiness detail: kids and their states, never key material."""
        now = self._clock()
        return {
            "ready": self.ready,
            "active": active_kid(self.keyring.schedule, now),
            "keys": {kid: str(state) for kid, state in sorted(self.keyring.states(now).items())},
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "last_error": self.last_error,
        }
