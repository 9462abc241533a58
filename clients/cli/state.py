"""The session file: the refresh handle on disk, readable by its owner alone, replaced atomically."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
# A session file is a few hundred bytes; anything far larger is not one this program wrote.
MAX_STATE_BYTES = 64 * 1024
# Longer than a refresh can take (the HTTP client's deadlines), so a waiting process outlives the
# holder's request, yet bounded: a holder stopped in a debugger does not hang every other process.
LOCK_TIMEOUT_SECONDS = 30.0
_LOCK_POLL_SECONDS = 0.05


class StateFileError(Exception):
    """The session file cannot be trusted or read; the message says what to do about it."""


class LockTimeout(StateFileError):
    """Another process held the session lock for longer than :data:`LOCK_TIMEOUT_SECONDS`."""


@dataclass(frozen=True)
class CachedToken:
    """An access token for one audience and when it expires (seconds since the epoch)."""

    access_token: str = field(repr=False)
    expires_at: float


@dataclass(frozen=True)
class Session:
    """What the client keeps between runs. The secrets are left out of ``repr``."""

    gateway: str
    user_id: str
    email: str
    role: str
    refresh_handle: str = field(repr=False)
    tokens: Mapping[str, CachedToken] = field(default_factory=dict)

    def rotated(self, refresh_handle: str, audience: str, token: CachedToken) -> Session:
        """The session after a mint: the successor handle, and the new token for ``audience``."""
        return replace(self, refresh_handle=refresh_handle, tokens={**self.tokens, audience: token})

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "gateway": self.gateway,
            "user": {"id": self.user_id, "email": self.email, "role": self.role},
            "refresh_handle": self.refresh_handle,
            "tokens": {
                audience: {"access_token": token.access_token, "expires_at": token.expires_at}
                for audience, token in self.tokens.items()
            },
        }

    @classmethod
    def from_json(cls, data: object) -> Session:
        """Raises ``ValueError`` for anything but the shape :meth:`to_json` writes."""
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValueError("not a session file of this version")
        user = data.get("user")
        tokens = data.get("tokens")
        if not isinstance(user, dict) or not isinstance(tokens, dict):
            raise ValueError("user and tokens must be objects")
        cached = {}
        for audience, token in tokens.items():
            if not isinstance(token, dict):
                raise ValueError("a cached token must be an object")
            expires_at = token.get("expires_at")
            if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
                raise ValueError("expires_at must be a number")
            cached[audience] = CachedToken(_text(token, "access_token"), float(expires_at))
        return cls(
            gateway=_text(data, "gateway"),
            user_id=_text(user, "id"),
            email=_text(user, "email"),
            role=_text(user, "role"),
            refresh_handle=_text(data, "refresh_handle"),
            tokens=cached,
        )


def _text(data: Mapping[str, object], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def default_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/hybrid-auth/session.json``, else under ``~/.config``.

    The XDG base directory specification says a relative ``XDG_CONFIG_HOME`` is to be ignored.
    """
    base = environ.get("XDG_CONFIG_HOME", "")
    config = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return config / "hybrid-auth" / "session.json"


class StateFile:
    """The session file at ``path``, and a lock beside it that serialises refreshes.

    Written as ssh writes a private key and read as ssh reads one: created 0600 in a 0700
    directory, and refused when another user owns it or its group or others may read or write
    it. The lock is a separate file because each save replaces the session file with a new
    inode: a lock held on the old one would not stop a process that opens the new one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    def load(self) -> Session | None:
        """The saved session, or None when there is none. Raises :class:`StateFileError`."""
        try:
            # O_NOFOLLOW: a symlink planted in place of the file is refused, not followed.
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise StateFileError(f"{self.path} is a symbolic link; refusing to follow it") from None
            raise StateFileError(f"cannot open {self.path}: {error.strerror}") from None
        with os.fdopen(fd, "rb") as file:
            # Checked on the open descriptor, so the file judged is the file read.
            _check_private(self.path, os.fstat(fd))
            raw = file.read(MAX_STATE_BYTES + 1)
        if len(raw) > MAX_STATE_BYTES:
            raise StateFileError(f"{self.path} is larger than a session file; delete it and log in again")
        try:
            return Session.from_json(json.loads(raw))
        except ValueError:
            raise StateFileError(
                f"{self.path} is not a session file this program wrote; delete it and log in again"
            ) from None

    def save(self, session: Session) -> None:
        """Write ``session`` to a new 0600 file beside the old one, then swap it in atomically.

        A reader sees the old session or the new one, never half of either, and a crash leaves
        at most a stray temporary file, never a truncated session.
        """
        self._make_directory()
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}.tmp")
        # O_EXCL: the name is new, so no file an attacker prepared (or its mode) is reused.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                # The umask can only take bits away from 0600; this states the intent outright.
                os.fchmod(file.fileno(), 0o600)
                file.write(json.dumps(session.to_json(), indent=2).encode() + b"\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        self._sync_directory()

    def delete(self) -> None:
        """Remove the session file; the lock file stays, as a process may be waiting on it."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sync_directory()

    @contextlib.contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
        """Hold the session lock: one process at a time reads, rotates and saves the handle."""
        self._make_directory()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"another process has held {self.lock_path} for {timeout:g} s; try again"
                        ) from None
                    time.sleep(_LOCK_POLL_SECONDS)
            yield
        finally:
            # Closing the descriptor releases the lock.
            os.close(fd)

    def _make_directory(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            # 0700 for the directory this program creates; one the user chose is left as it is.
            directory.mkdir(mode=0o700, parents=True)

    def _sync_directory(self) -> None:
        # The rename or unlink is durable once the directory entry is on disk.
        try:
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_private(path: Path, status: os.stat_result) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise StateFileError(f"{path} is not a regular file")
    if status.st_uid != os.geteuid():
        raise StateFileError(
            f"{path} belongs to user id {status.st_uid}, not to you; refusing to use a refresh handle "
            "another user could have written or read. Delete it and log in again."
        )
    loose = stat.S_IMODE(status.st_mode) & 0o077
    if loose:
        raise StateFileError(
            f"{path} has mode {stat.S_IMODE(status.st_mode):04o}: group or others may use it, and it "
            f"holds a refresh handle. If nobody else could have read it, `chmod 600 {path}`; "
            "otherwise delete it and log in again (and revoke the session from another device)."
        )
