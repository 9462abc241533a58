"""The command-line client's commands against a fake gateway that rotates handles as auth does.

The real routes are exercised by tests/e2e/test_native_cli.py; here the network is an
``httpx.MockTransport``, so timing, retries and the lock can be set up exactly.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clients.cli import state
from clients.cli.api import GatewayApi
from clients.cli.main import ExitCode, main, read_password
from clients.cli.state import StateFile
from tests.support.servers import ServerThread

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "cli"
EMAIL = "alice@example.com"
PASSWORD = "correct-horse-battery-staple"


Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeGateway:
    """Auth's native routes and orders' list, in memory: one session whose handle rotates on each mint.

    Like auth, the handle rotated away last is answered again with the same successor while that
    successor is unused (the grace period, without its clock); an older one is theft.
    """

    handle: str | None = None
    #: Handles of sessions a later login replaced, still live: the fake keeps one session current.
    older_sessions: set[str] = field(default_factory=set)
    previous: str | None = None
    successor_used: bool = False
    rotated_away: set[str] = field(default_factory=set)
    rotations: int = 0
    minted: int = 0
    valid_tokens: set[str] = field(default_factory=set)
    refuse_orders: int = 0
    lose_answers: int = 0
    requests: list[httpx.Request] = field(default_factory=list)
    #: Called inside a mint, before it answers: a test can hold the first mint open.
    during_mint: Callable[[], object] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/auth/native/login":
            body = json.loads(request.content)
            if body != {"email": EMAIL, "password": PASSWORD}:
                return error(401, "invalid_credentials")
            if self.handle is not None:
                self.older_sessions.add(self.handle)
            self.handle = f"handle-{len(self.requests)}"
            return httpx.Response(
                200,
                json={"user": {"id": "7", "email": EMAIL, "role": "user"}, "refresh_handle": self.handle},
            )
        if path == "/auth/native/token":
            return self.mint(request, json.loads(request.content)["refresh_handle"])
        if path == "/auth/native/logout":
            presented = json.loads(request.content)["refresh_handle"]
            if presented in self.older_sessions:
                self.older_sessions.remove(presented)
                return httpx.Response(200, json={"status": "logged_out"})
            if presented != self.handle:
                return error(401, "invalid_grant")
            self.handle = None
            return httpx.Response(200, json={"status": "logged_out"})
        if path == "/api/orders":
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if self.refuse_orders > 0 or token not in self.valid_tokens:
                self.refuse_orders -= 1
                return error(401, "invalid_token")
            return httpx.Response(200, json={"orders": [{"id": 1, "item": "tea"}], "next": None})
        return error(404, "not_found")

    def mint(self, request: httpx.Request, presented: str) -> httpx.Response:
        grace = presented == self.previous and not self.successor_used
        if not grace:
            if presented in self.rotated_away:
                self.handle = None
                return error(401, "refresh_reused")
            if presented != self.handle:
                return error(401, "invalid_grant")
        if self.during_mint is not None:
            self.during_mint()
        if not grace:
            self.rotations += 1
            self.rotated_away.add(presented)
            self.previous, self.successor_used = presented, False
            self.handle = f"handle-after-{self.rotations}"
        self.minted += 1
        token = f"token-{self.minted}"
        self.valid_tokens.add(token)
        if self.lose_answers > 0:
            # Rotated at auth, but the answer never reached the client.
            self.lose_answers -= 1
            raise httpx.ReadTimeout("lost", request=request)
        return httpx.Response(
            200,
            json={
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 300,
                "refresh_handle": self.handle,
            },
        )

    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]


def error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "detail": f"{code} (fake)"})


@dataclass
class Run:
    code: int
    out: str
    err: str


class Cli:
    """Runs ``main`` in process with the fake gateway as its network."""

    def __init__(self, tmp_path: Path, gateway: Handler) -> None:
        self.state = StateFile(tmp_path / "hybrid-auth" / "session.json")
        self.gateway = gateway

    def __call__(self, *argv: str, stdin: str = "", env: dict[str, str] | None = None) -> Run:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            ["--state", str(self.state.path), *argv],
            environ=env or {},
            stdin=io.StringIO(stdin),
            stdout=out,
            stderr=err,
            transport=httpx.MockTransport(self.gateway),
        )
        return Run(code, out.getvalue(), err.getvalue())

    def login(self) -> Run:
        run = self("login", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
        assert run.code == ExitCode.OK, run
        return run

    def handle(self) -> str:
        session = self.state.load()
        assert session is not None
        return session.refresh_handle


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def cli(tmp_path: Path, gateway: FakeGateway) -> Cli:
    return Cli(tmp_path, gateway)


def test_login_reads_the_password_from_stdin_and_saves_the_handle_without_printing_it(
    cli: Cli, gateway: FakeGateway
) -> None:
    run = cli.login()

    assert f"logged in as {EMAIL} (user)" in run.out
    assert gateway.handle == cli.handle()
    assert gateway.handle not in run.out + run.err
    assert PASSWORD not in run.out + run.err
    assert oct(cli.state.path.stat().st_mode & 0o777) == oct(0o600)


def test_wrong_credentials_exit_3_and_save_nothing(cli: Cli) -> None:
    run = cli("login", EMAIL, "--password-stdin", stdin="wrong\n")

    assert run.code == ExitCode.LOGIN_NEEDED
    assert "401 invalid_credentials" in run.err
    assert cli.state.load() is None


def test_there_is_no_way_to_give_the_password_as_an_argument(cli: Cli) -> None:
    with pytest.raises(SystemExit) as usage:
        cli("login", EMAIL, "--password", PASSWORD)
    assert usage.value.code == 2


def test_the_password_from_stdin_loses_its_line_ending_only() -> None:
    assert read_password(EMAIL, True, io.StringIO(" spaced pass \r\n")) == " spaced pass "


def test_without_a_terminal_or_password_stdin_the_client_does_not_prompt(cli: Cli) -> None:
    run = cli("login", EMAIL, stdin=PASSWORD)

    assert run.code == ExitCode.USAGE
    assert "--password-stdin" in run.err


def test_orders_with_a_fresh_cached_token_sends_no_mint(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()
    first = cli("orders")
    second = cli("orders")

    assert first.code == second.code == ExitCode.OK
    assert json.loads(second.out)["orders"] == [{"id": 1, "item": "tea"}]
    assert gateway.minted == 1
    assert "refreshed" in first.err
    assert "refreshed" not in second.err


def test_orders_refreshes_first_when_the_token_expires_within_the_margin(
    cli: Cli, gateway: FakeGateway
) -> None:
    cli.login()
    cli("orders")
    before = cli.handle()

    run = cli("orders", "--refresh-before", "300")

    assert run.code == ExitCode.OK
    assert gateway.minted == 2
    assert "refreshed: rotated the refresh handle" in run.err
    assert cli.handle() != before
    assert cli.handle() == gateway.handle


def test_a_401_from_orders_gets_one_new_token_and_one_retry(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()
    cli("orders")
    gateway.refuse_orders = 1

    run = cli("orders")

    assert run.code == ExitCode.OK, run
    assert "orders refused the access token (invalid_token); refreshing once" in run.err
    assert gateway.minted == 2
    assert gateway.paths()[-3:] == ["/api/orders", "/auth/native/token", "/api/orders"]


def test_a_second_401_from_orders_is_not_retried_again(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()
    gateway.refuse_orders = 5

    run = cli("orders")

    assert run.code == ExitCode.REFUSED
    assert "401 invalid_token" in run.err
    assert gateway.paths().count("/api/orders") == 2


@pytest.mark.parametrize("code", ["refresh_reused", "invalid_grant"])
def test_a_handle_the_server_will_never_take_again_deletes_the_session_and_asks_for_a_login(
    cli: Cli, gateway: FakeGateway, code: str
) -> None:
    cli.login()
    if code == "refresh_reused":
        gateway.rotated_away.add(gateway.handle or "")
    else:
        gateway.handle = "ended-elsewhere"

    run = cli("token")

    assert run.code == ExitCode.LOGIN_NEEDED
    assert "log in with: python -m clients.cli login EMAIL" in run.err
    assert cli.state.load() is None


def test_a_lost_mint_answer_is_retried_once_with_the_same_handle(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()
    held = cli.handle()
    gateway.lose_answers = 1

    run = cli("token")

    assert run.code == ExitCode.OK, run
    presented = [
        json.loads(r.content)["refresh_handle"] for r in gateway.requests if r.url.path.endswith("/token")
    ]
    # The retry presents the handle the client still holds, and gets the successor auth kept for it.
    assert presented == [held, held]
    assert gateway.rotations == 1
    assert cli.handle() == gateway.handle
    assert run.out == "token-2\n"


def test_two_processes_needing_a_refresh_rotate_the_handle_once(
    cli: Cli, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.login()
    contended = threading.Event()
    real_flock = state.fcntl.flock

    def flock(fd: int, operation: int) -> None:
        try:
            real_flock(fd, operation)
        except BlockingIOError:
            contended.set()
            raise

    monkeypatch.setattr(state.fcntl, "flock", flock)
    # The first mint is held open until the second process is waiting on the lock.
    gateway.during_mint = lambda: contended.wait(10)
    results: list[Run] = []
    threads = [threading.Thread(target=lambda: results.append(cli("token"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert contended.is_set()
    assert [run.code for run in results] == [ExitCode.OK, ExitCode.OK]
    # The second process waited, then found the first one's token: one mint, one rotation.
    assert gateway.minted == gateway.rotations == 1
    assert results[0].out == results[1].out == "token-1\n"
    assert cli.handle() == gateway.handle


def test_refresh_rotates_even_a_fresh_token(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()
    cli("token")
    before = cli.handle()

    run = cli("refresh")

    assert run.code == ExitCode.OK
    assert gateway.minted == 2
    assert cli.handle() != before


def test_logout_ends_the_session_at_auth_then_deletes_the_file(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()

    run = cli("logout")

    assert run.code == ExitCode.OK
    assert f"logged out {EMAIL}" in run.out
    assert gateway.handle is None
    assert not cli.state.path.exists()
    assert cli("status").code == ExitCode.LOGIN_NEEDED


def test_logout_of_a_session_that_already_ended_still_forgets_it(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()
    gateway.handle = "ended-elsewhere"

    run = cli("logout")

    assert run.code == ExitCode.OK
    assert "the session has ended" in run.out
    assert not cli.state.path.exists()


def test_logout_keeps_the_file_when_the_gateway_cannot_be_reached(tmp_path: Path, cli: Cli) -> None:
    cli.login()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    run = Cli(tmp_path, down)("logout")

    assert run.code == ExitCode.UNREACHABLE
    assert "cannot reach http://localhost:8000" in run.err
    assert cli.state.load() is not None


def test_a_new_login_logs_the_previous_session_out(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()
    first = cli.handle()

    run = cli.login()

    assert "logged out the previous session" in run.err
    logouts = [json.loads(r.content) for r in gateway.requests if r.url.path == "/auth/native/logout"]
    assert logouts == [{"refresh_handle": first}]
    assert gateway.older_sessions == set()
    assert cli.handle() == gateway.handle != first


def test_status_names_the_user_and_token_expiry_and_no_secret(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()
    cli("token")
    sent = len(gateway.requests)

    run = cli("status")

    assert run.code == ExitCode.OK
    assert f"logged in as {EMAIL} (user, user id 7)" in run.out
    assert re.search(r"^access token for orders: expires in (299|300) s$", run.out, re.MULTILINE)
    assert cli.handle() not in run.out
    assert "token-1" not in run.out
    assert len(gateway.requests) == sent


def test_an_unsafe_session_file_exits_4_before_anything_is_sent(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()
    cli.state.path.chmod(0o644)
    sent = len(gateway.requests)

    run = cli("orders")

    assert run.code == ExitCode.STATE_FILE
    assert "mode 0644" in run.err
    assert len(gateway.requests) == sent


def test_the_handle_goes_only_to_the_gateway_that_issued_it(cli: Cli, gateway: FakeGateway) -> None:
    cli.login()
    sent = len(gateway.requests)

    run = cli("--gateway", "http://127.0.0.1:9999", "token")

    assert run.code == ExitCode.USAGE
    assert "belongs to http://localhost:8000" in run.err
    assert len(gateway.requests) == sent


@pytest.mark.parametrize(
    "url",
    [
        "http://gateway.example.com",
        "ftp://localhost",
        "http://user:pw@localhost:8000",
        "http://localhost/?x=1",
    ],
)
def test_a_gateway_the_handle_could_leak_to_is_refused(cli: Cli, gateway: FakeGateway, url: str) -> None:
    run = cli("--gateway", url, "login", EMAIL, "--password-stdin", stdin=PASSWORD)

    assert run.code == ExitCode.USAGE
    assert gateway.requests == []


@pytest.mark.parametrize(
    "url", ["https://gateway.example.com", "http://127.0.0.1:8000", "http://[::1]:8000/"]
)
def test_https_anywhere_and_plain_http_on_loopback_are_accepted(
    cli: Cli, gateway: FakeGateway, url: str
) -> None:
    run = cli("login", EMAIL, "--password-stdin", stdin=PASSWORD, env={"HYBRID_AUTH_GATEWAY": url})

    assert run.code == ExitCode.OK, run
    assert str(gateway.requests[0].url).startswith(url.rstrip("/") + "/auth/native/login")


def test_an_answer_that_is_not_the_error_shape_is_reported_by_its_status(tmp_path: Path) -> None:
    def proxy_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    run = Cli(tmp_path, proxy_page)("login", EMAIL, "--password-stdin", stdin=PASSWORD)

    assert run.code == ExitCode.REFUSED
    assert "error: 502 http_502: Bad Gateway" in run.err


def test_a_429_shows_when_to_retry(cli: Cli, gateway: FakeGateway) -> None:
    def throttled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": "too_many_requests", "detail": "slow down"}, headers={"Retry-After": "12"}
        )

    cli.gateway = throttled
    run = cli("login", EMAIL, "--password-stdin", stdin=PASSWORD)

    assert run.code == ExitCode.REFUSED
    assert "429 too_many_requests: slow down (retry after 12 s)" in run.err


def test_the_help_lists_every_exit_code() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        main(["--help"])

    for code in ExitCode:
        assert re.search(rf"\b{code.value} [a-z]", out.getvalue().split("exit codes:")[1]), code


@pytest.mark.parametrize("path", sorted(CLIENT.glob("*.py")), ids=lambda path: path.name)
def test_the_client_imports_only_httpx_the_standard_library_and_itself(path: Path) -> None:
    # A reader can lift clients/cli into an app of their own: nothing of the services comes along.
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.partition(".")[0])

    assert imported - sys.stdlib_module_names <= {"httpx", "clients"}


def test_a_proxy_from_the_environment_never_sees_a_handle_sent_over_plain_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A real server and a real connection: httpx ignores proxies when a transport is given.
    async def native_login(request: Request) -> JSONResponse:
        user = {"id": "7", "email": EMAIL, "role": "user"}
        return JSONResponse({"user": user, "refresh_handle": "handle"})

    app = Starlette(routes=[Route("/auth/native/login", native_login, methods=["POST"])])
    # Nothing listens on the discard port: a request sent to this "proxy" fails to connect.
    for variable in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)

    with ServerThread(app) as server, GatewayApi(server.url) as api:
        logged_in = api.login(EMAIL, PASSWORD)

    assert logged_in.refresh_handle == "handle"
