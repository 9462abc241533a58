"""The command line's revocations against a real Redis: the key-compromise drill and operator resets."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from deploy.processes import free_port
from services.auth.key_store import load_keys, read_schedule
from services.auth.redis_client import connect
from services.auth.revocations import Entry, Kind
from services.auth.store import RevocationStore
from tests.integration.test_auth_cli import PASSWORD, add_user, cli, cli_redis, redis_url, stored_user

__all__ = ["cli_redis", "redis_url"]  # the fixtures this module borrows


def recorded(url: str) -> tuple[Entry, ...]:
    async def read() -> tuple[Entry, ...]:
        client = connect(url, 2.0)
        try:
            return (await RevocationStore(client).read(time.time())).entries
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_the_key_compromise_drill_retires_the_key_and_revokes_all_it_can_sign(
    tmp_path: Path, redis_url: str
) -> None:
    keys_dir = tmp_path / "keys"
    assert cli("keys", "init", redis_url=redis_url, keys_dir=keys_dir).returncode == 0
    compromised = load_keys(keys_dir).active_kid(time.time())
    assert cli("keys", "rotate", redis_url=redis_url, keys_dir=keys_dir).returncode == 0
    started = time.time()

    drill = cli("keys", "revoke", compromised, redis_url=redis_url, keys_dir=keys_dir)

    assert drill.returncode == 0, drill.stderr
    assert f"key {compromised} retired" in drill.stdout
    # Out of the JWKS and no longer signing: its successor signs from now on.
    assert compromised not in load_keys(keys_dir).published(time.time())
    assert load_keys(keys_dir).active_kid(time.time()) != compromised
    (entry,) = recorded(redis_url)
    assert (entry.kind, entry.id) == (Kind.KEY, compromised)
    # Ahead of now by the JWKS max-age and the leeway: a thief's fresh tokens are covered too.
    assert entry.before >= started + 300 + 30


def test_the_drill_refuses_the_only_key_and_records_nothing(tmp_path: Path, redis_url: str) -> None:
    keys_dir = tmp_path / "keys"
    assert cli("keys", "init", redis_url=redis_url, keys_dir=keys_dir).returncode == 0
    (only,) = read_schedule(keys_dir)
    refused = cli("keys", "revoke", only, redis_url=redis_url, keys_dir=keys_dir)
    assert refused.returncode == 1
    assert "run `keys rotate` first" in refused.stderr
    assert recorded(redis_url) == ()


def test_a_drill_that_could_not_record_can_be_run_again(tmp_path: Path, redis_url: str) -> None:
    keys_dir = tmp_path / "keys"
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    assert cli("keys", "init", redis_url=redis_url, keys_dir=keys_dir).returncode == 0
    compromised = load_keys(keys_dir).active_kid(time.time())
    assert cli("keys", "rotate", redis_url=redis_url, keys_dir=keys_dir).returncode == 0

    failed = cli("keys", "revoke", compromised, redis_url=nowhere, keys_dir=keys_dir)
    assert failed.returncode == 1
    assert "unavailable" in failed.stderr
    again = cli("keys", "revoke", compromised, redis_url=redis_url, keys_dir=keys_dir)
    assert again.returncode == 0, again.stderr
    assert [(entry.kind, entry.id) for entry in recorded(redis_url)] == [(Kind.KEY, compromised)]


def test_an_operators_password_reset_and_disable_revoke_the_users_tokens(redis_url: str) -> None:
    assert add_user("carol@example.com", "user", redis_url).returncode == 0
    user = stored_user(redis_url, "carol@example.com")
    reset = cli("users", "set-password", "carol@example.com", redis_url=redis_url, stdin=PASSWORD + "-new\n")
    assert reset.returncode == 0, reset.stderr
    assert [(entry.kind, entry.id) for entry in recorded(redis_url)] == [(Kind.USER, user.id)]
    disabling = time.time()
    disabled = cli("users", "disable", "carol@example.com", redis_url=redis_url)
    assert disabled.returncode == 0, disabled.stderr
    assert {entry.id for entry in recorded(redis_url)} == {user.id}
    assert max(entry.before for entry in recorded(redis_url)) >= int(disabling) + 1
