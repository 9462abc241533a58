"""Command line for auth: serve, manage users, create signing keys.

python -m services.auth [serve]
python -m services.auth keys init | list | rotate [--if-active-for SECONDS]
python -m services.auth keys retire KID [--force]
python -m services.auth keys revoke KID                 (key compromise: retire it, refuse its tokens)
python -m services.auth users add EMAIL --role ROLE     (password on stdin)
python -m services.auth users list
python -m services.auth users set-password EMAIL        (password on stdin)
python -m services.auth users disable EMAIL             (revokes its sessions; login refused)
python -m services.auth users enable EMAIL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from services.auth import domain
from services.auth.domain import SessionPolicy
from services.auth.key_schedule import ScheduleError, format_time
from services.auth.key_store import KeyFileError, init_keys, load_keys, read_schedule, retire_key
from services.auth.passwords import Passwords
from services.auth.redis_client import connect
from services.auth.service import Accounts, StoredRevocations, revoke_compromised_key, rotate_signing_key
from services.auth.settings import Settings, rotation_policy
from services.auth.store import RevocationStore, SessionStore, ThrottleStore, UserStore
from shared.core import ApiError, SettingsError, env_str
from shared.runtime import serve_from_env


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise SystemExit("passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


@contextlib.asynccontextmanager
async def _accounts() -> AsyncIterator[Accounts]:
    # Only Redis is needed here, so the full server settings (and its secrets) are not required.
    client = connect(_redis_url(), 2.0)
    # The CLI only revokes sessions, which never consults the lifetime policy.
    policy = SessionPolicy(idle=1, absolute=1)
    try:
        yield Accounts(
            UserStore(client),
            SessionStore(client, policy),
            ThrottleStore(client),
            Passwords(),
            revocations=StoredRevocations(RevocationStore(client)),
            token_ttl=rotation_policy(os.environ).token_ttl,
        )
    finally:
        await client.aclose()


def _redis_url() -> str:
    return env_str(os.environ, "REDIS_URL", "redis://127.0.0.1:6379/0")


async def _users_add(email: str, role: str) -> None:
    password = _read_password()
    async with _accounts() as accounts:
        user = await accounts.create_user(email, role, password)
    print(f"created {user.email} ({user.role}) id={user.id}")


async def _users_list() -> None:
    async with _accounts() as accounts:
        for user in await accounts.users.all():
            print(f"{user.id}  {user.role:<5}  {user.email}")


async def _users_set_password(email: str) -> None:
    password = _read_password()
    domain.validate_new_password(password)
    async with _accounts() as accounts:
        user = await accounts.user_by_email(email)
        # An operator's reset ends every session of the account (the web renews the caller's).
        revoked = await accounts.change_password(user, password, renew=None)
    print(f"password changed for {user.email}; {revoked} session(s) revoked")


async def _users_set_disabled(email: str, disabled: bool) -> None:
    async with _accounts() as accounts:
        user = await accounts.user_by_email(email)
        revoked = await accounts.set_disabled(user, disabled)
    print(f"disabled {user.email}; {revoked} session(s) revoked" if disabled else f"enabled {user.email}")


def _keys_dir() -> Path:
    return Path(env_str(os.environ, "AUTH_KEYS_DIR", "var/keys"))


def _keys_init() -> None:
    directory = _keys_dir()
    kid = init_keys(directory)
    print(f"created signing key {kid} in {directory}" if kid else f"{directory} already holds a key")


def _keys_list() -> None:
    directory = _keys_dir()
    now = time.time()
    load_keys(directory, now=now)  # a broken file is reported here, naming it
    schedule = read_schedule(directory)
    print(f"{'kid':<43}  {'state':<7}  {'activates':<20}  {'retires':<20}  removes")
    for kid, times in sorted(schedule.items(), key=lambda item: (item[1].activates_at, item[0])):
        print(
            f"{kid:<43}  {times.state(now):<7}  {format_time(times.activates_at):<20}"
            f"  {format_time(times.retires_at):<20}  {format_time(times.removes_at)}"
        )


def _keys_rotate(if_active_for: float | None) -> None:
    policy = rotation_policy(os.environ)
    rotation = rotate_signing_key(_keys_dir(), policy, if_active_for=if_active_for)
    kid, schedule = rotation.kid, rotation.schedule
    if kid is None:
        print("no rotation due" + (f": key {rotation.pending} is next" if rotation.pending else ""))
        return
    print(f"published key {kid}; it signs from {format_time(schedule[kid].activates_at)}")
    print(
        f"(publish lead {policy.publish_lead:.0f} s = reload {policy.reload_interval:g} + JWKS max-age"
        f" {policy.jwks_max_age} + 2 x clock skew {policy.clock_skew} + margin {policy.margin})"
    )
    for other, times in sorted(schedule.items()):
        if other != kid and times.removes_at is not None:
            print(f"key {other} stops signing then and leaves the JWKS at {format_time(times.removes_at)}")


def _keys_retire(kid: str, force: bool) -> None:
    directory, policy = _keys_dir(), rotation_policy(os.environ)
    schedule = retire_key(directory, kid, policy, force=force)
    if kid in schedule:
        print(f"key {kid} leaves the JWKS at {format_time(schedule[kid].removes_at)}")
    else:
        print(f"key {kid} removed")


async def _keys_revoke(kid: str) -> None:
    directory, policy = _keys_dir(), rotation_policy(os.environ)
    client = connect(_redis_url(), 2.0)
    try:
        entry = await revoke_compromised_key(
            directory, kid, policy, StoredRevocations(RevocationStore(client))
        )
    finally:
        await client.aclose()
    print(f"key {kid} retired; every token it signed is refused until {format_time(entry.until)}")


def kid_arguments(argv: Sequence[str]) -> list[str]:
    """``argv`` with the kid of ``keys retire`` or ``keys revoke`` after ``--``.

    A kid is base64url and one in 64 begins with ``-``, which argparse would take for an option;
    an operator pasting it from ``keys list`` must not have to know that.
    """
    args = list(argv)
    if args[:2] not in (["keys", "retire"], ["keys", "revoke"]) or "--" in args:
        return args
    options = [arg for arg in args[2:] if arg in ("--force", "-h", "--help")]
    others = [arg for arg in args[2:] if arg not in options]
    return [*args[:2], *options, "--", *others]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.auth", description="The auth service.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the HTTP service (the default)")
    keys = commands.add_parser("keys", help="signing keys").add_subparsers(dest="action", required=True)
    keys.add_parser("init", help="create a first signing key in AUTH_KEYS_DIR if it has none")
    keys.add_parser("list", help="every key with its state and schedule")
    rotate = keys.add_parser(
        "rotate", help="publish a new key that takes over signing once verifiers have it"
    )
    rotate.add_argument(
        "--if-active-for",
        type=float,
        metavar="SECONDS",
        help="only if the signing key has signed this long and no rotation is pending (for cron)",
    )
    retire = keys.add_parser(
        "retire", help="withdraw a next key; with --force, remove a compromised key from the JWKS now"
    )
    retire.add_argument("kid")
    retire.add_argument(
        "--force", action="store_true", help="remove it now: tokens it signed fail at once (compromise)"
    )
    revoke = keys.add_parser(
        "revoke",
        help="key compromise: retire the key now and publish a revocation of every token it signed",
    )
    revoke.add_argument("kid")
    users = commands.add_parser("users", help="accounts").add_subparsers(dest="action", required=True)
    add = users.add_parser("add", help="create an account; the password is read from stdin")
    add.add_argument("email")
    add.add_argument("--role", choices=domain.ROLES, default="user")
    users.add_parser("list", help="list accounts")
    set_password = users.add_parser("set-password", help="change a password (stdin) and revoke its sessions")
    set_password.add_argument("email")
    disable = users.add_parser("disable", help="refuse the account's logins and revoke its sessions")
    disable.add_argument("email")
    enable = users.add_parser("enable", help="allow a disabled account to log in again")
    enable.add_argument("email")
    args = parser.parse_args(kid_arguments(sys.argv[1:] if argv is None else argv))

    try:
        if args.command in (None, "serve"):
            serve_from_env("services.auth.app:app_from_env", service="auth", load=Settings.from_env)
        elif args.command == "keys":
            if args.action == "init":
                _keys_init()
            elif args.action == "list":
                _keys_list()
            elif args.action == "rotate":
                _keys_rotate(args.if_active_for)
            elif args.action == "revoke":
                asyncio.run(_keys_revoke(args.kid))
            else:
                _keys_retire(args.kid, args.force)
        elif args.action == "add":
            asyncio.run(_users_add(args.email, args.role))
        elif args.action == "list":
            asyncio.run(_users_list())
        elif args.action in ("disable", "enable"):
            asyncio.run(_users_set_disabled(args.email, args.action == "disable"))
        else:
            asyncio.run(_users_set_password(args.email))
    except ApiError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except (KeyFileError, ScheduleError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
