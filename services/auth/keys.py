"""The signing keys and their lifecycle: ``next`` -> ``active`` -> ``retired`` -> removed.

Layout: ``<dir>/<kid>.pem`` (PKCS#8, mode 0600; the kid is the key's RFC 7638 thumbprint, so
it cannot disagree with the key it names) and ``<dir>/keys.json``, the schedule: for each key
when it was created, when it starts signing, when it stops signing and when it leaves the
JWKS. Every auth replica reads the same schedule and computes the active key from it and the
clock, so replicas agree without talking to each other, whenever they noticed the change.
Only the CLI writes the directory (atomically, under a lock); auth only reads it.

A directory from before the schedule existed (``<kid>.pem`` files and an ``active`` file naming
the signing kid) still loads: every key is published and the named one signs. The first CLI
change writes ``keys.json`` for it.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from shared.jwks import MIN_RSA_BITS as MIN_BITS
from shared.tokens import ALGORITHM, TOKEN_TYPE, loads_strict

logger = logging.getLogger(__name__)

SCHEDULE_FILE = "keys.json"
LEGACY_ACTIVE_FILE = "active"
LOCK_FILE = ".lock"
SCHEDULE_VERSION = 1


class KeyFileError(Exception):
    """The key directory is unusable; the message names the file."""


class ScheduleError(Exception):
    """A requested lifecycle change is not allowed; the message says why."""


class KeyState(enum.StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRED = "retired"
    REMOVED = "removed"


@dataclass(frozen=True)
class RotationPolicy:
    """The timings a rotation must respect so that no valid token ever fails.

    ``token_ttl``: lifetime of an access token. ``clock_skew``: the largest clock difference
    between any two hosts (auth replicas, verifiers, the operator's), which is also the
    verifiers' leeway. ``jwks_max_age``: how long a verifier may keep a JWKS before it must
    refetch. ``reload_interval``: how long auth takes to notice a changed key directory.
    ``margin``: slack for a slow or failed fetch.
    """

    token_ttl: int = 300
    clock_skew: int = 10
    jwks_max_age: int = 300
    reload_interval: float = 5.0
    margin: int = 30

    @property
    def publish_lead(self) -> float:
        """How long a new key is published before it may sign.

        Auth notices the new file within ``reload_interval``; a verifier that fetched just
        before that keeps its JWKS for ``jwks_max_age``; the operator's clock may be behind and
        a replica's ahead, one ``clock_skew`` each.
        """
        return self.reload_interval + self.jwks_max_age + 2 * self.clock_skew + self.margin

    @property
    def retired_period(self) -> float:
        """How long a key stays published after it stopped signing.

        Its last token was signed just before ``retires_at`` by a replica whose clock may be
        ``clock_skew`` behind, lives ``token_ttl``, is accepted ``clock_skew`` (the leeway) past
        its ``exp`` by a verifier, and the replica that stops publishing may be ``clock_skew``
        ahead: ``token_ttl + 3 * clock_skew``, plus the margin.
        """
        return self.token_ttl + 3 * self.clock_skew + self.margin


@dataclass(frozen=True)
class KeyTimes:
    """One key's schedule, in Unix seconds; ``None`` means "not scheduled yet"."""

    created_at: float
    activates_at: float
    retires_at: float | None = None
    removes_at: float | None = None

    def state(self, now: float) -> KeyState:
        if self.removes_at is not None and now >= self.removes_at:
            return KeyState.REMOVED
        if self.retires_at is not None and now >= self.retires_at:
            return KeyState.RETIRED
        if now >= self.activates_at:
            return KeyState.ACTIVE
        return KeyState.NEXT

    def as_dict(self) -> dict[str, float | None]:
        return {
            "created_at": self.created_at,
            "activates_at": self.activates_at,
            "retires_at": self.retires_at,
            "removes_at": self.removes_at,
        }


Schedule = dict[str, KeyTimes]

# Times are floats: ``now + lead - now`` may come out a hair under ``lead``.
_ROUNDING = 1e-3


def active_kid(schedule: Schedule, now: float) -> str | None:
    """The key that signs at ``now``: of the keys in state ``active``, the one activated last."""
    active = [
        (times.activates_at, kid) for kid, times in schedule.items() if times.state(now) is KeyState.ACTIVE
    ]
    return max(active)[1] if active else None


def check_schedule(schedule: Schedule, policy: RotationPolicy | None, now: float) -> None:
    """Raise :class:`ScheduleError` unless exactly one key signs from now on and no valid token breaks.

    Past transitions are not re-judged (a later change of settings cannot undo them); every
    future one must give verifiers ``publish_lead`` to learn a key and ``retired_period`` to
    stop needing one.
    """
    if active_kid(schedule, now) is None:
        raise ScheduleError("no key is active now")
    ordered = sorted(schedule.items(), key=lambda item: (item[1].activates_at, item[0]))
    live = [(kid, times) for kid, times in ordered if times.state(now) is not KeyState.REMOVED]
    for kid, times in live:
        if times.retires_at is not None and times.retires_at < times.activates_at:
            raise ScheduleError(f"key {kid} retires before it activates")
        if times.removes_at is not None and (times.retires_at is None or times.removes_at < times.retires_at):
            raise ScheduleError(f"key {kid} is removed before it retires")
    signers = [(kid, times) for kid, times in live if times.state(now) in (KeyState.ACTIVE, KeyState.NEXT)]
    for (kid, times), (successor, successor_times) in itertools.pairwise(signers):
        if times.retires_at is None or times.retires_at > successor_times.activates_at:
            raise ScheduleError(f"keys {kid} and {successor} would both sign")
        if times.retires_at < successor_times.activates_at:
            raise ScheduleError(f"no key signs between {kid} retiring and {successor} activating")
    last_kid, last = signers[-1]
    if last.retires_at is not None:
        raise ScheduleError(f"key {last_kid} retires and no key takes over")
    if policy is None:
        return
    for kid, times in live:
        if (
            times.activates_at > now
            and times.activates_at - times.created_at < policy.publish_lead - _ROUNDING
        ):
            raise ScheduleError(
                f"key {kid} would sign {times.activates_at - times.created_at:.0f} s after it was created;"
                f" verifiers need {policy.publish_lead:.0f} s to learn it"
            )
        if (
            times.retires_at is not None
            and times.removes_at is not None
            and times.removes_at > now
            and times.removes_at - times.retires_at < policy.retired_period - _ROUNDING
        ):
            raise ScheduleError(
                f"key {kid} would leave the JWKS {times.removes_at - times.retires_at:.0f} s after it stops"
                f" signing; its tokens need {policy.retired_period:.0f} s"
            )


def plan_rotation(schedule: Schedule, new_kid: str, policy: RotationPolicy, now: float) -> Schedule:
    """The schedule with ``new_kid`` published now and signing after ``publish_lead``."""
    current = active_kid(schedule, now)
    if current is None:
        raise ScheduleError("no key is active now")
    pending = [kid for kid, times in schedule.items() if times.state(now) is KeyState.NEXT]
    if pending:
        raise ScheduleError(f"a rotation is already scheduled: key {pending[0]} is next")
    switch = now + policy.publish_lead
    planned = dict(schedule)
    for kid, times in schedule.items():
        # Retired keys from a legacy directory have no removal time yet: give them one now.
        if times.state(now) is KeyState.RETIRED and times.removes_at is None:
            planned[kid] = replace(times, removes_at=now + policy.retired_period)
    planned[current] = replace(
        schedule[current], retires_at=switch, removes_at=switch + policy.retired_period
    )
    planned[new_kid] = KeyTimes(created_at=now, activates_at=switch)
    return planned


def plan_retirement(schedule: Schedule, kid: str, now: float, *, force: bool) -> Schedule:
    """The schedule after ending ``kid``'s life as early as is safe, or at once with ``force``.

    Safe: a ``next`` key is withdrawn (it never signed). An ``active`` key needs ``rotate``
    first; a ``retired`` one leaves when its tokens have expired. ``force`` is for a
    compromised key: it leaves the JWKS now, its tokens fail at once, and if it was signing,
    the next key signs from now on (verifiers that have not cached it refetch once).
    """
    if kid not in schedule or schedule[kid].state(now) is KeyState.REMOVED:
        raise ScheduleError(f"no published key {kid}")
    times = schedule[kid]
    state = times.state(now)
    planned = dict(schedule)
    if state is KeyState.NEXT:
        del planned[kid]
        previous = [k for k, t in planned.items() if t.retires_at == times.activates_at]
        for other in previous:
            planned[other] = replace(planned[other], retires_at=None, removes_at=None)
        return planned
    if not force:
        if state is KeyState.ACTIVE:
            raise ScheduleError(
                f"key {kid} is signing: run `keys rotate`"
                f" (or `keys retire {kid} --force` if it is compromised)"
            )
        raise ScheduleError(
            f"key {kid} is retired and leaves the JWKS at {_format_time(times.removes_at)};"
            " use --force only if it is compromised (its unexpired tokens fail at once)"
        )
    planned[kid] = replace(times, retires_at=min(times.retires_at or now, now), removes_at=now)
    if state is KeyState.ACTIVE:
        successors = sorted((t.activates_at, k) for k, t in planned.items() if t.state(now) is KeyState.NEXT)
        if not successors:
            raise ScheduleError(f"key {kid} is the only signing key: run `keys rotate` first")
        successor = successors[0][1]
        planned[successor] = replace(planned[successor], activates_at=now)
    return planned


def _format_time(value: float | None) -> str:
    if value is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


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
    if key.raw_value.key_size < MIN_BITS:
        raise KeyFileError(f"{path}: RSA key is {key.raw_value.key_size} bits, at least {MIN_BITS} required")
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


def create_key(directory: Path, *, bits: int = MIN_BITS) -> str:
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


def _unremoved(schedule: Schedule, now: float) -> Schedule:
    return {kid: times for kid, times in schedule.items() if times.state(now) is not KeyState.REMOVED}


def _commit(directory: Path, schedule: Schedule, policy: RotationPolicy, now: float) -> None:
    """Write ``schedule`` without its removed keys, then delete the files no schedule names."""
    kept = _unremoved(schedule, now)
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
        return _unremoved(planned, moment)


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
