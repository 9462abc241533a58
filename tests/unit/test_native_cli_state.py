"""The command-line client's session file: private on disk, refused when it is not, replaced atomically."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.cli import state
from clients.cli.api import LoggedIn, Minted
from clients.cli.state import CachedToken, LockTimeout, Session, StateFile, StateFileError, default_path

HANDLE = "42.c2Vzc2lvbi1sb2NhdG9y.c2VjcmV0LXNlY3JldC1zZWNyZXQ"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl"


def a_session(handle: str = HANDLE) -> Session:
    return Session(
        gateway="http://localhost:8000",
        user_id="42",
        email="alice@example.com",
        role="user",
        refresh_handle=handle,
        tokens={"orders": CachedToken(TOKEN, 1_000_300.0)},
    )


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_saved_session_is_created_0600_in_a_new_0700_directory_whatever_the_umask(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "config" / "hybrid-auth" / "session.json")

    with umask(0):
        store.save(a_session())

    assert mode(store.path) == 0o600
    assert mode(store.path.parent) == 0o700
    assert store.load() == a_session()


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o610])
def test_a_session_file_group_or_others_may_use_is_refused_with_what_to_do(
    tmp_path: Path, loose: int
) -> None:
    store = StateFile(tmp_path / "session.json")
    store.save(a_session())
    store.path.chmod(loose)

    with pytest.raises(StateFileError) as refused:
        store.load()

    message = str(refused.value)
    assert f"mode {loose:04o}" in message
    assert f"chmod 600 {store.path}" in message
    assert HANDLE not in message


@pytest.mark.parametrize("private", [0o600, 0o400, 0o700])
def test_a_session_file_only_its_owner_may_use_is_read(tmp_path: Path, private: int) -> None:
    store = StateFile(tmp_path / "session.json")
    store.save(a_session())
    store.path.chmod(private)

    assert store.load() == a_session()


def test_a_session_file_another_user_owns_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateFile(tmp_path / "session.json")
    store.save(a_session())
    owner = store.path.stat().st_uid
    # Being someone else is simpler than chown, and needs no root.
    monkeypatch.setattr(state.os, "geteuid", lambda: owner + 1)

    with pytest.raises(StateFileError, match=f"belongs to user id {owner}, not to you"):
        store.load()


def test_a_symbolic_link_in_place_of_the_session_file_is_not_followed(tmp_path: Path) -> None:
    real = StateFile(tmp_path / "real.json")
    real.save(a_session())
    (tmp_path / "session.json").symlink_to(real.path)

    with pytest.raises(StateFileError, match="symbolic link"):
        StateFile(tmp_path / "session.json").load()


def test_no_session_file_is_no_session(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "absent" / "session.json").load() is None


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[]", b'{"version": 1}', b'{"version": 2}', b"{" + b" " * state.MAX_STATE_BYTES + b"}"],
)
def test_a_file_this_program_did_not_write_is_refused_with_what_to_do(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "session.json"
    path.write_bytes(content)
    path.chmod(0o600)

    with pytest.raises(StateFileError, match="delete it and log in again"):
        StateFile(path).load()


def test_a_save_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "session.json")
    store.save(a_session("first"))
    before = store.path.stat().st_ino

    store.save(a_session("second"))

    # A new inode: the old file was never opened for writing, so a reader saw it whole.
    assert store.path.stat().st_ino != before
    session = store.load()
    assert session is not None
    assert session.refresh_handle == "second"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["session.json"]


def test_a_save_that_fails_keeps_the_previous_session_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateFile(tmp_path / "session.json")
    store.save(a_session("first"))

    def full_disk(source: object, destination: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.save(a_session("second"))

    session = store.load()
    assert session is not None
    assert session.refresh_handle == "first"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["session.json"]


def test_the_secrets_stay_out_of_every_repr() -> None:
    shown = " ".join(
        repr(value)
        for value in (
            a_session(),
            CachedToken(TOKEN, 1.0),
            LoggedIn(user_id="42", email="alice@example.com", role="user", refresh_handle=HANDLE),
            Minted(access_token=TOKEN, expires_in=300, refresh_handle=HANDLE),
        )
    )

    assert "alice@example.com" in shown
    assert HANDLE not in shown
    assert TOKEN not in shown


def test_deleting_the_session_keeps_the_lock_file_a_waiting_process_holds(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "session.json")
    store.save(a_session())
    with store.locked():
        store.delete()

    assert store.load() is None
    assert store.lock_path.exists()
    assert mode(store.lock_path) == 0o600


def test_a_second_holder_of_the_lock_waits_and_gives_up_at_its_deadline(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "session.json")
    # flock belongs to an open file: a second open in another thread contends like another process.
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.locked():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(LockTimeout, match="another process has held"), store.locked(timeout=0.2):
            pass
    finally:
        release.set()
        holder.join(10)

    with store.locked(timeout=0.2):
        pass


def test_the_default_file_is_under_xdg_config_home_when_it_is_absolute(tmp_path: Path) -> None:
    assert default_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "hybrid-auth" / "session.json"
    home_config = Path.home() / ".config" / "hybrid-auth" / "session.json"
    # The XDG specification: a relative path is invalid and ignored.
    assert default_path({"XDG_CONFIG_HOME": "relative/dir"}) == home_config
    assert default_path({}) == home_config
