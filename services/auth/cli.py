"""Command line for auth: serve, manage users, create signing keys.

python -m services.auth [serve]
python -m services.auth keys init | list | rotate [--if-active-for SECONDS]
python -m services.auth keys retire KID [--force]
python -m services.auth users add EMAIL --role ROLE     (password on stdin)
python -m services.auth users list
python -m services.auth users set-password EMAIL        (password on stdin)
python -m services.auth users disable EMAIL             (revokes its sessions; login refused)
python -m services.auth users enable EMAIL
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from services.auth import domain
from services.auth.domain import SessionPolicy
from services.auth.keys import (
    KeyFileError,
    KeyState,
    ScheduleError,
    active_kid,
    init_keys,
    load_keys,
    read_schedule,
    retire_key,
    rotate_keys,
)
from services.auth.passwords import Passwords
from services.auth.redis_client import connect
from services.auth.settings import Settings, rotation_policy
from services.auth.store import SessionStore, UserStore
from shared import ApiError, NotFound, SettingsError, env_str, serve_from_env


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise SystemExit("passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _stores() -> tuple[UserStore, SessionStore, Callable[[], Awaitable[None]]]:
    # Only Redis is needed here, so the full server settings (and its secrets) are not required.
    client = connect(env_str(os.environ, "REDIS_URL", "redis://127.0.0.1:6379/0"), 2.0)
    # The CLI only revokes sessions, which never consults the lifetime policy.
    policy = SessionPolicy(idle=1, absolute=1)
    return UserStore(client), SessionStore(client, policy), client.aclose


async def _users_add(email: str, role: str) -> None:
    password = _read_password()
    email = domain.validate_new_account(email, role, password)
    users, _, close = _stores()
    try:
        user = await users.create(email, role, await Passwords().hash(password))
    finally:
        await close()
    print(f"created {user.email} ({user.role}) id={user.id}")


async def _users_list() -> None:
    users, _, close = _stores()
    try:
        for user in await users.all():
            print(f"{user.id}  {user.role:<5}  {user.email}")
    finally:
        await close()


async def _users_set_password(email: str) -> None:
    password = _read_password()
    domain.validate_new_password(password)
    users, sessions, close = _stores()
    try:
        user = await users.by_email(domain.normalize_email(email))
        if user is None:
            raise NotFound(f"no user {email}")
        await users.set_password_hash(user.id, await Passwords().hash(password))
        revoked = await sessions.delete_all_for_user(user.id)
    finally:
        await close()
    print(f"password changed for {user.email}; {revoked} session(s) revoked")


async def _users_set_disabled(email: str, disabled: bool) -> None:
    users, sessions, close = _stores()
    try:
        user = await users.by_email(domain.normalize_email(email))
        if user is None:
            raise NotFound(f"no user {email}")
        await users.set_disabled(user.id, disabled)
        revoked = await sessions.delete_all_for_user(user.id) if disabled else 0
    finally:
        await close()
    print(f"disabled {user.email}; {revoked} session(s) revoked" if disabled else f"enabled {user.email}")


def _keys_dir() -> Path:
    return Path(env_str(os.environ, "AUTH_KEYS_DIR", "var/keys"))


def _keys_init() -> None:
    directory = _keys_dir()
    kid = init_keys(directory)
    print(f"created signing key {kid} in {directory}" if kid else f"{directory} already holds a key")


def _when(value: float | None) -> str:
    return "-" if value is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def _keys_list() -> None:
    directory = _keys_dir()
    now = time.time()
    load_keys(directory, now=now)  # a broken file is reported here, naming it
    schedule = read_schedule(directory)
    print(f"{'kid':<43}  {'state':<7}  {'activates':<20}  {'retires':<20}  removes")
    for kid, times in sorted(schedule.items(), key=lambda item: (item[1].activates_at, item[0])):
        print(
            f"{kid:<43}  {times.state(now):<7}  {_when(times.activates_at):<20}"
            f"  {_when(times.retires_at):<20}  {_when(times.removes_at)}"
        )


def _keys_rotate(if_active_for: float | None) -> None:
    directory, policy = _keys_dir(), rotation_policy(os.environ)
    if if_active_for is not None:
        now = time.time()
        schedule = read_schedule(directory)
        current = active_kid(schedule, now)
        pending = [kid for kid, times in schedule.items() if times.state(now) is KeyState.NEXT]
        if pending or (current is not None and now - schedule[current].activates_at < if_active_for):
            print("no rotation due" + (f": key {pending[0]} is next" if pending else ""))
            return
    kid = rotate_keys(directory, policy)
    schedule = read_schedule(directory)
    print(f"published key {kid}; it signs from {_when(schedule[kid].activates_at)}")
    print(
        f"(publish lead {policy.publish_lead:.0f} s = reload {policy.reload_interval:g} + JWKS max-age"
        f" {policy.jwks_max_age} + 2 x clock skew {policy.clock_skew} + margin {policy.margin})"
    )
    for other, times in sorted(schedule.items()):
        if other != kid and times.removes_at is not None:
            print(f"key {other} stops signing then and leaves the JWKS at {_when(times.removes_at)}")


def _keys_retire(kid: str, force: bool) -> None:
    directory, policy = _keys_dir(), rotation_policy(os.environ)
    schedule = retire_key(directory, kid, policy, force=force)
    if kid in schedule:
        print(f"key {kid} leaves the JWKS at {_when(schedule[kid].removes_at)}")
    else:
        print(f"key {kid} removed")


def kid_arguments(argv: Sequence[str]) -> list[str]:
    """``argv`` with the kid of ``keys retire`` after ``--``.

    A kid is base64url and one in 64 begins with ``-``, which argparse would take for an option;
    an operator pasting it from ``keys list`` must not have to know that.
    """
    args = list(argv)
    if args[:2] != ["keys", "retire"] or "--" in args:
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
