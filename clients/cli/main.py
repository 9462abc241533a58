"""The command line: arguments, where the password comes from, and which exit code each failure gets."""

from __future__ import annotations

import argparse
import enum
import getpass
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import httpx

from clients.cli import commands
from clients.cli.api import ApiError, BadGatewayUrl, GatewayApi, Unreachable
from clients.cli.commands import Context, NotLoggedIn, UsageError
from clients.cli.state import StateFile, StateFileError, default_path
from clients.cli.timing import DEFAULT_REFRESH_BEFORE_SECONDS

GATEWAY_VARIABLE = "HYBRID_AUTH_GATEWAY"
STATE_VARIABLE = "HYBRID_AUTH_STATE"
# No password is this long; a pipe that never ends is a mistake, not a password.
MAX_PASSWORD_CHARS = 4096


class ExitCode(enum.IntEnum):
    """What a script can tell apart without reading the message."""

    OK = 0
    #: The gateway answered with an error other than those below (429, 403, 5xx, ...).
    REFUSED = 1
    #: Bad arguments (argparse exits with 2 too), or a session that belongs to another gateway.
    USAGE = 2
    #: Not logged in, wrong credentials, or the session ended: run ``login``.
    LOGIN_NEEDED = 3
    #: The session file is unsafe (other users may read it) or unreadable: nothing was sent.
    STATE_FILE = 4
    #: No answer from the gateway (refused, timed out); the session file is unchanged.
    UNREACHABLE = 5


EPILOG = """\
exit codes: 0 ok, 1 refused by the gateway, 2 usage, 3 log in (again), 4 unsafe or unreadable
session file, 5 gateway unreachable.
The session file holds the refresh handle: it is created 0600 and refused if others may read it.
"""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m clients.cli",
        description="A native client of the hybrid-auth gateway: no browser, no cookie.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument(
        "--gateway", help=f"the gateway's origin (default ${GATEWAY_VARIABLE}, else the session's)"
    )
    top.add_argument(
        "--state", type=Path, help=f"the session file (default ${STATE_VARIABLE}, else XDG config)"
    )
    verbs = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = verbs.add_parser("login", help="log in; the password is asked for, or read from stdin")
    login.add_argument("email")
    login.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (never from arguments)"
    )

    token = verbs.add_parser("token", help="print a current access token, refreshing it if needed")
    token.add_argument("--audience", default=commands.ORDERS_AUDIENCE)
    _refresh_before(token)

    orders = verbs.add_parser("orders", help="GET /api/orders with a current access token")
    _refresh_before(orders)
    orders.add_argument(
        "--limit", type=_page_size, metavar="1-100", help="orders per page (the server's default 20)"
    )

    refresh = verbs.add_parser("refresh", help="rotate the refresh handle and mint a new access token now")
    refresh.add_argument("--audience", default=commands.ORDERS_AUDIENCE)

    verbs.add_parser("logout", help="end the session at auth and delete the session file")
    verbs.add_parser("status", help="who is logged in and when the cached tokens expire (no secrets)")
    return top


def _refresh_before(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--refresh-before",
        type=_seconds,
        default=DEFAULT_REFRESH_BEFORE_SECONDS,
        metavar="SECONDS",
        help="refresh when the token expires within this many seconds (default %(default)s)",
    )


def _seconds(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _page_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError("must be from 1 to 100")
    return value


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Run one command; ``transport`` replaces the network in tests."""
    env = os.environ if environ is None else environ
    err = stderr or sys.stderr
    args = parser().parse_args(argv)
    context = Context(
        store=StateFile(args.state or Path(env.get(STATE_VARIABLE) or default_path(env))),
        connect=lambda url: GatewayApi(url, transport=transport),
        out=stdout or sys.stdout,
        err=err,
        gateway=args.gateway or env.get(GATEWAY_VARIABLE) or None,
    )
    try:
        run(args, context, stdin or sys.stdin)
    except (UsageError, BadGatewayUrl) as error:
        return _fail(err, ExitCode.USAGE, str(error))
    except NotLoggedIn as error:
        return _fail(err, ExitCode.LOGIN_NEEDED, f"{error}; log in with: python -m clients.cli login EMAIL")
    except StateFileError as error:
        return _fail(err, ExitCode.STATE_FILE, str(error))
    except Unreachable as error:
        return _fail(err, ExitCode.UNREACHABLE, str(error))
    except ApiError as error:
        code = ExitCode.LOGIN_NEEDED if error.code == "invalid_credentials" else ExitCode.REFUSED
        return _fail(err, code, str(error))
    return ExitCode.OK


def run(args: argparse.Namespace, context: Context, stdin: TextIO) -> None:
    if args.command == "login":
        commands.login(context, args.email, read_password(args.email, args.password_stdin, stdin))
    elif args.command == "token":
        commands.print_token(context, args.audience, args.refresh_before)
    elif args.command == "orders":
        commands.orders(context, args.refresh_before, args.limit)
    elif args.command == "refresh":
        commands.refresh(context, args.audience)
    elif args.command == "logout":
        commands.logout(context)
    elif args.command == "status":
        commands.status(context)


def read_password(email: str, from_stdin: bool, stdin: TextIO) -> str:
    """From stdin with ``--password-stdin`` (one line, its newline dropped), else a prompt without echo.

    Never from an argument: arguments are visible to every user in ``ps`` and kept in shell history.
    """
    if from_stdin:
        password = stdin.read(MAX_PASSWORD_CHARS + 1)
        if len(password) > MAX_PASSWORD_CHARS:
            raise UsageError(f"the password on stdin is longer than {MAX_PASSWORD_CHARS} characters")
        password = password.removesuffix("\n").removesuffix("\r")
    elif stdin.isatty():
        password = getpass.getpass(f"password for {email}: ")
    else:
        raise UsageError("stdin is not a terminal to prompt on; pipe the password with --password-stdin")
    if not password:
        raise UsageError("the password is empty")
    return password


def _fail(err: TextIO, code: ExitCode, message: str) -> int:
    print(f"error: {message}", file=err)
    return code
