"""The auth command line as a real process against a real Redis: keys init and user management."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

from deploy.processes import free_port
from deploy.redis_server import RedisServer
from services.auth import domain
from services.auth.domain import SessionPolicy, User
from services.auth.key_store import load_keys
from services.auth.redis_client import connect
from services.auth.store import SessionStore, UserStore

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "first-Passw0rd-for-the-cli"
NEW_PASSWORD = "second-Passw0rd-for-the-cli"
POLICY = SessionPolicy(idle=1800, absolute=86400)


@pytest.fixture(scope="module")
def cli_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own server, so no other test can stop or fill it underneath the CLI."""
    with RedisServer(tmp_path_factory.mktemp("cli-redis")) as server:
        yield server


@pytest.fixture
def redis_url(cli_redis: RedisServer) -> str:
    """The server's URL with an empty database, so emails never collide between tests."""
    with redis.Redis.from_url(cli_redis.url) as client:
        client.flushdb()
    return cli_redis.url


def cli(
    *args: str, redis_url: str, stdin: str = "", keys_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m services.auth ARGS`` as production would, without any server secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSION_SECRET", "APP_ENV", "AUTH_"))}
    env["REDIS_URL"] = redis_url
    if keys_dir is not None:
        env["AUTH_KEYS_DIR"] = str(keys_dir)
    return subprocess.run(
        [sys.executable, "-m", "services.auth", *args],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_no_password(result: subprocess.CompletedProcess[str], *passwords: str) -> None:
    for password in passwords:
        assert password not in result.stdout
        assert password not in result.stderr


def add_user(
    email: str, role: str, redis_url: str, password: str = PASSWORD
) -> subprocess.CompletedProcess[str]:
    result = cli("users", "add", email, "--role", role, redis_url=redis_url, stdin=password + "\n")
    assert_no_password(result, password)
    return result


def with_stores(redis_url: str, action: Callable[[UserStore, SessionStore], Awaitable[T]]) -> T:
    """Run ``action`` against the service's own stores, the way the server would see the data."""

    async def run() -> T:
        client = connect(redis_url, 2.0)
        try:
            return await action(UserStore(client), SessionStore(client, POLICY))
        finally:
            await client.aclose()

    return asyncio.run(run())


def stored_user(redis_url: str, email: str) -> User:
    user = with_stores(redis_url, lambda users, _: users.by_email(email))
    assert user is not None, f"{email} is not stored"
    return user


def open_session(redis_url: str, user: User) -> str:
    """Log ``user`` in as the server does; the session's handle."""
    now = time.time()
    session = domain.new_session(domain.new_session_id(user.id), user, now, user_agent="test", ip="127.0.0.1")
    with_stores(redis_url, lambda _, sessions: sessions.create(session, now))
    return session.handle


def session_is_live(redis_url: str, user: User, handle: str) -> bool:
    live = with_stores(redis_url, lambda _, sessions: sessions.live_for_user(user.id, time.time()))
    return any(session.handle == handle for session in live)


def session_index(redis_url: str, user: User) -> set[str]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        return set(client.smembers(f"user-sessions:{{{user.id}}}"))


def verifies(password_hash: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(password_hash, password)
    except VerifyMismatchError:
        return False


class TestKeys:
    def test_keys_init_creates_a_key_and_a_second_run_keeps_it(self, tmp_path: Path) -> None:
        keys_dir = tmp_path / "keys"
        # Nothing listens here: creating a key must not need Redis.
        nowhere = f"redis://127.0.0.1:{free_port()}/0"
        first = cli("keys", "init", redis_url=nowhere, keys_dir=keys_dir)
        assert first.returncode == 0, first.stderr
        pems = list(keys_dir.glob("*.pem"))
        assert len(pems) == 1
        kid = pems[0].stem
        assert stat.S_IMODE(pems[0].stat().st_mode) == 0o600
        assert f"created signing key {kid} in {keys_dir}" in first.stdout
        assert "BEGIN" not in first.stdout + first.stderr
        assert load_keys(keys_dir).active_kid(time.time()) == kid

        second = cli("keys", "init", redis_url=nowhere, keys_dir=keys_dir)
        assert second.returncode == 0, second.stderr
        assert f"{keys_dir} already holds a key" in second.stdout
        assert list(keys_dir.glob("*.pem")) == pems
        assert load_keys(keys_dir).active_kid(time.time()) == kid

    def test_rotate_publishes_a_next_key_list_shows_it_and_retire_withdraws_it(self, tmp_path: Path) -> None:
        keys_dir = tmp_path / "keys"
        nowhere = f"redis://127.0.0.1:{free_port()}/0"
        assert cli("keys", "init", redis_url=nowhere, keys_dir=keys_dir).returncode == 0
        (first,) = (path.stem for path in keys_dir.glob("*.pem"))

        rotated = cli("keys", "rotate", redis_url=nowhere, keys_dir=keys_dir)
        assert rotated.returncode == 0, rotated.stderr
        (second,) = {path.stem for path in keys_dir.glob("*.pem")} - {first}
        assert f"published key {second}" in rotated.stdout
        # The defaults: 5 s reload + 300 s max-age + 2 x 10 s skew + 30 s margin.
        assert "publish lead 355 s" in rotated.stdout
        listed = cli("keys", "list", redis_url=nowhere, keys_dir=keys_dir)
        states = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
        assert states == {first: "active", second: "next"}

        again = cli("keys", "rotate", redis_url=nowhere, keys_dir=keys_dir)
        assert again.returncode == 1
        assert f"a rotation is already scheduled: key {second} is next" in again.stderr

        refused = cli("keys", "retire", first, redis_url=nowhere, keys_dir=keys_dir)
        assert refused.returncode == 1
        assert "is signing: run `keys rotate`" in refused.stderr

        withdrawn = cli("keys", "retire", second, redis_url=nowhere, keys_dir=keys_dir)
        assert withdrawn.returncode == 0, withdrawn.stderr
        assert [path.stem for path in keys_dir.glob("*.pem")] == [first]
        schedule = json.loads((keys_dir / "keys.json").read_text())["keys"]
        assert schedule[first]["retires_at"] is None

    def test_rotate_if_active_for_rotates_only_when_due_so_cron_can_run_it_often(
        self, tmp_path: Path
    ) -> None:
        keys_dir = tmp_path / "keys"
        nowhere = f"redis://127.0.0.1:{free_port()}/0"
        assert cli("keys", "init", redis_url=nowhere, keys_dir=keys_dir).returncode == 0
        not_due = cli("keys", "rotate", "--if-active-for", "3600", redis_url=nowhere, keys_dir=keys_dir)
        assert not_due.returncode == 0, not_due.stderr
        assert "no rotation due" in not_due.stdout
        assert len(list(keys_dir.glob("*.pem"))) == 1
        due = cli("keys", "rotate", "--if-active-for", "0", redis_url=nowhere, keys_dir=keys_dir)
        assert "published key" in due.stdout, due.stderr
        pending = cli("keys", "rotate", "--if-active-for", "0", redis_url=nowhere, keys_dir=keys_dir)
        assert pending.returncode == 0, pending.stderr
        assert "no rotation due: key" in pending.stdout
        assert len(list(keys_dir.glob("*.pem"))) == 2

    def test_a_broken_key_file_is_named_and_nothing_changes(self, tmp_path: Path) -> None:
        keys_dir = tmp_path / "keys"
        nowhere = f"redis://127.0.0.1:{free_port()}/0"
        assert cli("keys", "init", redis_url=nowhere, keys_dir=keys_dir).returncode == 0
        broken = keys_dir / "broken.pem"
        broken.write_text("not a key")
        before = (keys_dir / "keys.json").read_text()
        result = cli("keys", "rotate", redis_url=nowhere, keys_dir=keys_dir)
        assert result.returncode == 1
        assert f"{broken}: not a PEM RSA private key" in result.stderr
        assert "Traceback" not in result.stderr
        assert (keys_dir / "keys.json").read_text() == before
        assert len(list(keys_dir.glob("*.pem"))) == 2


class TestUsers:
    def test_users_add_creates_the_user_with_its_role(self, redis_url: str) -> None:
        result = add_user("Admin@Example.com", "admin", redis_url)
        assert result.returncode == 0, result.stderr
        assert "created admin@example.com (admin)" in result.stdout

        user = stored_user(redis_url, "admin@example.com")
        assert user.role == "admin"
        assert f"id={user.id}" in result.stdout
        assert user.password_hash.startswith("$argon2id$")
        assert verifies(user.password_hash, PASSWORD)

        listed = cli("users", "list", redis_url=redis_url)
        assert listed.returncode == 0, listed.stderr
        (line,) = listed.stdout.splitlines()
        assert line.split() == [user.id, "admin", "admin@example.com"]
        assert "argon2" not in listed.stdout

    def test_users_list_shows_every_user_sorted_by_email(self, redis_url: str) -> None:
        assert add_user("zoe@example.com", "user", redis_url).returncode == 0
        assert add_user("bob@example.com", "admin", redis_url).returncode == 0
        listed = cli("users", "list", redis_url=redis_url)
        assert listed.returncode == 0, listed.stderr
        rows = [line.split()[1:] for line in listed.stdout.splitlines()]
        assert rows == [["admin", "bob@example.com"], ["user", "zoe@example.com"]]

    def test_a_duplicate_email_fails_with_a_clear_message(self, redis_url: str) -> None:
        assert add_user("carol@example.com", "user", redis_url).returncode == 0
        duplicate = add_user(" CAROL@example.com", "admin", redis_url)
        assert duplicate.returncode != 0
        assert "an account with this email exists" in duplicate.stderr
        assert "Traceback" not in duplicate.stderr
        listed = cli("users", "list", redis_url=redis_url)
        assert listed.stdout.split()[1:] == ["user", "carol@example.com"]

    def test_a_short_password_is_refused_and_nothing_is_stored(self, redis_url: str) -> None:
        result = add_user("dave@example.com", "user", redis_url, password="short-pw")
        assert result.returncode != 0
        assert "password must be 12" in result.stderr
        assert "Traceback" not in result.stderr
        assert cli("users", "list", redis_url=redis_url).stdout == ""

    def test_an_unknown_role_is_refused(self, redis_url: str) -> None:
        result = add_user("erin@example.com", "root", redis_url)
        assert result.returncode != 0
        assert "invalid choice: 'root'" in result.stderr
        assert cli("users", "list", redis_url=redis_url).stdout == ""

    def test_set_password_changes_the_hash_and_revokes_only_that_users_sessions(self, redis_url: str) -> None:
        assert add_user("frank@example.com", "user", redis_url).returncode == 0
        assert add_user("grace@example.com", "user", redis_url).returncode == 0
        frank, grace = (
            stored_user(redis_url, "frank@example.com"),
            stored_user(redis_url, "grace@example.com"),
        )
        frank_handles = {open_session(redis_url, frank), open_session(redis_url, frank)}
        grace_handle = open_session(redis_url, grace)
        assert all(session_is_live(redis_url, frank, handle) for handle in frank_handles)

        result = cli(
            "users", "set-password", "Frank@Example.com", redis_url=redis_url, stdin=NEW_PASSWORD + "\n"
        )
        assert_no_password(result, NEW_PASSWORD, PASSWORD)
        assert result.returncode == 0, result.stderr
        assert "password changed for frank@example.com; 2 session(s) revoked" in result.stdout

        after = stored_user(redis_url, "frank@example.com")
        assert after.id == frank.id
        assert verifies(after.password_hash, NEW_PASSWORD)
        assert not verifies(after.password_hash, PASSWORD)
        assert not any(session_is_live(redis_url, frank, handle) for handle in frank_handles)
        assert session_index(redis_url, frank) == set()
        assert session_is_live(redis_url, grace, grace_handle)
        assert session_index(redis_url, grace) == {grace_handle}

    def test_set_password_refuses_a_short_password_and_keeps_the_old_one(self, redis_url: str) -> None:
        assert add_user("heidi@example.com", "user", redis_url).returncode == 0
        heidi = stored_user(redis_url, "heidi@example.com")
        handle = open_session(redis_url, heidi)
        result = cli("users", "set-password", "heidi@example.com", redis_url=redis_url, stdin="tiny-pw\n")
        assert result.returncode != 0
        assert "password must be 12" in result.stderr
        assert_no_password(result, "tiny-pw")
        assert verifies(stored_user(redis_url, "heidi@example.com").password_hash, PASSWORD)
        assert session_is_live(redis_url, heidi, handle)

    def test_set_password_for_an_unknown_user_fails_clearly(self, redis_url: str) -> None:
        result = cli(
            "users", "set-password", "nobody@example.com", redis_url=redis_url, stdin=NEW_PASSWORD + "\n"
        )
        assert result.returncode != 0
        assert "no user nobody@example.com" in result.stderr
        assert_no_password(result, NEW_PASSWORD)

    def test_disable_revokes_the_users_sessions_and_enable_clears_the_flag(self, redis_url: str) -> None:
        assert add_user("ivan@example.com", "user", redis_url).returncode == 0
        assert add_user("judy@example.com", "user", redis_url).returncode == 0
        ivan = stored_user(redis_url, "ivan@example.com")
        handles = [open_session(redis_url, ivan) for _ in range(2)]
        judy = stored_user(redis_url, "judy@example.com")
        judy_handle = open_session(redis_url, judy)

        result = cli("users", "disable", "Ivan@Example.com", redis_url=redis_url)
        assert result.returncode == 0, result.stderr
        assert "disabled ivan@example.com; 2 session(s) revoked" in result.stdout
        assert stored_user(redis_url, "ivan@example.com").disabled
        assert not any(session_is_live(redis_url, ivan, handle) for handle in handles)
        assert session_index(redis_url, ivan) == set()
        assert session_is_live(redis_url, judy, judy_handle)

        result = cli("users", "enable", "ivan@example.com", redis_url=redis_url)
        assert result.returncode == 0, result.stderr
        assert not stored_user(redis_url, "ivan@example.com").disabled

    def test_disable_for_an_unknown_user_fails_clearly(self, redis_url: str) -> None:
        result = cli("users", "disable", "nobody@example.com", redis_url=redis_url)
        assert result.returncode != 0
        assert "no user nobody@example.com" in result.stderr

    def test_an_unreachable_redis_is_a_clear_error_not_a_traceback(self) -> None:
        result = cli("users", "list", redis_url=f"redis://127.0.0.1:{free_port()}/0")
        assert result.returncode != 0
        assert "session store is unavailable" in result.stderr
        assert "Traceback" not in result.stderr
