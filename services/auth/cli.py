"""Command line for auth: serve, manage users, create signing keys.

python -m services.auth [serve]
python -m services.auth keys init
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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from services.auth import domain
from services.auth.domain import SessionPolicy
from services.auth.keys import init_keys
from services.auth.passwords import Passwords
from services.auth.settings import Settings
from services.auth.store import SessionStore, UserStore, connect
from shared import ApiError, NotFound, env_str, serve_from_env


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


def _keys_init() -> None:
    directory = Path(env_str(os.environ, "AUTH_KEYS_DIR", "var/keys"))
    kid = init_keys(directory)
    print(f"created signing key {kid} in {directory}" if kid else f"{directory} already holds a key")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.auth", description="The auth service.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the HTTP service (the default)")
    keys = commands.add_parser("keys", help="signing keys").add_subparsers(dest="action", required=True)
    keys.add_parser("init", help="create a first signing key in AUTH_KEYS_DIR if it has none")
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
    args = parser.parse_args(argv)

    try:
        if args.command in (None, "serve"):
            serve_from_env("services.auth.app:app_from_env", service="auth", load=Settings.from_env)
        elif args.command == "keys":
            _keys_init()
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
    return 0
