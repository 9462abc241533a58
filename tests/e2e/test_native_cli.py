"""The command-line client (clients/cli) as real processes against the real cluster, through the gateway.

Each command is a new interpreter, as a user runs it, sharing the session file between runs: login
with the password on stdin, status, orders, a forced and a timed refresh that rotate the handle,
logout; a rotated-away handle presented again ends the session for every token it minted; and no
command ever prints the handle. The shared cluster serves: each test logs in to an account of its
own and ends the sessions it starts.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from deploy.devcluster import REPO_ROOT, Cluster
from tests.support.cluster import add_user
from tests.support.http import assert_json_error, bearer
from tests.support.revocation import wait_until_refused

pytestmark = pytest.mark.e2e

PASSWORD = "a-native-client-passphrase"
# A new interpreter importing httpx is about half a second on a loaded 2-core machine.
COMMAND_TIMEOUT = 60


@dataclass
class Cli:
    """``python -m clients.cli`` against the cluster's gateway, with one session file."""

    cluster: Cluster
    state: Path
    seen: list[str] = field(default_factory=list)

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("HYBRID_AUTH_")}
        # The XDG default would be this machine's own config; every run names its file.
        env["XDG_CONFIG_HOME"] = str(self.state.parent.parent)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "clients.cli",
                "--gateway",
                self.cluster.url,
                "--state",
                str(self.state),
                *args,
            ],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            cwd=REPO_ROOT,
            env=env,
            check=False,
        )
        self.seen.append(result.stdout + result.stderr)
        return result

    def login(self, email: str) -> None:
        result = self("login", email, "--password-stdin", stdin=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
        assert f"logged in as {email} (user)" in result.stdout

    def saved(self) -> dict[str, object]:
        content: dict[str, object] = json.loads(self.state.read_text())
        return content

    def handle(self) -> str:
        handle = self.saved()["refresh_handle"]
        assert isinstance(handle, str)
        return handle

    def access_token(self) -> str:
        tokens = self.saved()["tokens"]
        assert isinstance(tokens, dict)
        token: str = tokens["orders"]["access_token"]
        return token


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.url, timeout=10.0) as http:
        yield http


@pytest.fixture
def account(cluster: Cluster, request: pytest.FixtureRequest) -> str:
    email = f"native-cli-{request.node.name.removeprefix('test_')[:40].replace('_', '-')}@example.com"
    add_user(cluster, email, PASSWORD)
    return email


@pytest.fixture
def cli(cluster: Cluster, tmp_path: Path) -> Cli:
    return Cli(cluster, tmp_path / "config" / "hybrid-auth" / "session.json")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def present(client: httpx.Client, handle: str) -> httpx.Response:
    """A mint with ``handle``, as someone who copied the session file would send it."""
    return client.post("/auth/native/token", json={"refresh_handle": handle, "audience": "orders"})


def test_login_orders_refresh_and_logout_as_separate_processes(
    cli: Cli, account: str, client: httpx.Client
) -> None:
    cli.login(account)
    assert mode(cli.state) == 0o600
    assert mode(cli.state.parent) == 0o700

    status = cli("status")
    assert status.returncode == 0, status.stderr
    assert f"logged in as {account} (user" in status.stdout
    assert "access tokens: none yet" in status.stdout

    token = cli("token")
    assert token.returncode == 0, token.stderr
    created = client.post(
        "/api/orders", json={"item": "cli tea", "quantity": 3}, headers=bearer(token.stdout.strip())
    )
    assert created.status_code == 201, created.text

    # The token minted by `token` is fresh: orders uses it without a rotation.
    handle = cli.handle()
    orders = cli("orders")
    assert orders.returncode == 0, orders.stderr
    assert [(order["item"], order["quantity"]) for order in json.loads(orders.stdout)["orders"]] == [
        ("cli tea", 3)
    ]
    assert "refreshed" not in orders.stderr
    assert cli.handle() == handle

    # A margin as long as the token's life: refreshed before the call.
    timed = cli("orders", "--refresh-before", "300")
    assert timed.returncode == 0, timed.stderr
    assert "refreshed: rotated the refresh handle" in timed.stderr
    assert json.loads(timed.stdout)["orders"][0]["item"] == "cli tea"
    assert cli.handle() != handle
    assert mode(cli.state) == 0o600

    forced_from = cli.handle()
    forced = cli("refresh")
    assert forced.returncode == 0, forced.stderr
    assert cli.handle() != forced_from
    status = cli("status")
    assert "access token for orders: expires in" in status.stdout

    last_token, last_handle = cli.access_token(), cli.handle()
    logout = cli("logout")
    assert logout.returncode == 0, logout.stderr
    assert f"logged out {account}" in logout.stdout
    assert not cli.state.exists()
    # The session is over at auth: its handle mints nothing and its tokens are refused.
    assert_json_error(present(client, last_handle), 401, "invalid_grant")
    wait_until_refused(cli.cluster, [last_token])
    after = cli("orders")
    assert after.returncode == 3
    assert "not logged in" in after.stderr

    every_handle = {handle, forced_from, last_handle}
    assert not any(secret in output for output in cli.seen for secret in every_handle)


def test_a_rotated_away_handle_used_again_ends_the_session_and_the_cli_asks_for_a_login(
    cli: Cli, account: str, client: httpx.Client
) -> None:
    cli.login(account)
    assert cli("orders").returncode == 0
    stolen = cli.handle()
    # Two rotations: the stolen handle is no longer the last one rotated away, so no grace
    # period can take it for a retry of a lost answer.
    assert cli("refresh").returncode == 0
    assert cli("refresh").returncode == 0
    minted = cli.access_token()

    assert_json_error(present(client, stolen), 401, "refresh_reused")

    # The whole session is revoked: its tokens are refused through the feed, then the client's
    # one retry finds the session gone, forgets it and asks for a login.
    wait_until_refused(cli.cluster, [minted])
    orders = cli("orders")
    assert orders.returncode == 3, orders.stderr
    assert "orders refused the access token" in orders.stderr
    assert "log in with: python -m clients.cli login EMAIL" in orders.stderr
    assert not cli.state.exists()


def test_wrong_password_exits_3_and_saves_nothing(cli: Cli, account: str) -> None:
    result = cli("login", account, "--password-stdin", stdin="not-the-password\n")

    assert result.returncode == 3
    assert "401 invalid_credentials" in result.stderr
    assert not cli.state.exists()


def test_a_session_file_others_may_read_is_refused_and_nothing_is_sent(
    cli: Cli, account: str, client: httpx.Client
) -> None:
    cli.login(account)
    handle = cli.handle()
    cli.state.chmod(0o644)

    refused = cli("token")

    assert refused.returncode == 4
    assert "mode 0644" in refused.stderr
    assert handle not in refused.stderr
    # Nothing was sent: the handle is still the one login gave, and it still works.
    cli.state.chmod(0o600)
    assert cli.handle() == handle
    assert cli("logout").returncode == 0
