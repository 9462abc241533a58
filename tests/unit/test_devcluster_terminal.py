"""What ``make run`` tells a person: the banner, the variable that moves a busy port, the log format."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.devcluster import Cluster, ClusterConfig, ClusterError, banner
from services.auth.settings import DEMO_PASSWORD

# `make run` prefixes the banner with "devcluster | "; a line must fit an 80-column terminal.
_PREFIX = len("devcluster | ")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    ("service", "variable"),
    [
        ("gateway", "GATEWAY_PORT"),
        ("orders", "ORDERS_PORT"),
        ("redis", "REDIS_PORT"),
        ("auth-2", "AUTH_PORT"),
    ],
)
def test_a_port_in_use_names_the_variable_that_moves_it(
    tmp_path: Path, busy_port: int, service: str, variable: str
) -> None:
    config = ClusterConfig.on_free_ports(tmp_path, auth_replicas=2)
    field = {"gateway": "gateway_port", "orders": "orders_port", "redis": "redis_port"}.get(service)
    if field is None:
        config = dataclasses.replace(config, auth_ports=(config.auth_ports[0], busy_port))
    else:
        config = dataclasses.replace(config, **{field: busy_port})

    with pytest.raises(ClusterError) as refused:
        Cluster(config).start_service(service)

    message = str(refused.value)
    assert f"127.0.0.1:{busy_port} is already in use" in message
    assert f"{variable}=" in message
    assert message.endswith(" make run")


def test_the_banner_gives_the_url_the_users_and_the_demo_password_in_80_columns(tmp_path: Path) -> None:
    cluster = Cluster(ClusterConfig.on_free_ports(tmp_path))

    lines = banner(cluster)

    assert f"ready: {cluster.url} (open it in a browser; use localhost)" in lines
    assert f"demo password: {DEMO_PASSWORD}" in lines
    assert any("alice@example.com" in line and "admin@example.com" in line for line in lines)
    assert max(len(line) for line in lines) + _PREFIX <= 80


def test_the_banner_never_echoes_a_chosen_demo_password(tmp_path: Path) -> None:
    cluster = Cluster(ClusterConfig.on_free_ports(tmp_path, {"DEMO_PASSWORD": "my-own-secret-words"}))

    shown = "\n".join(banner(cluster))

    assert "my-own-secret-words" not in shown
    assert "demo password: the value of DEMO_PASSWORD" in shown


@pytest.mark.parametrize(
    ("environ", "terminal", "expected"),
    [
        pytest.param({}, True, "text", id="terminal"),
        pytest.param({}, False, None, id="pipe: each service decides, and picks JSON"),
        pytest.param({"LOG_FORMAT": "json"}, True, None, id="chosen: passed through as it is"),
    ],
)
def test_on_a_terminal_the_services_are_told_to_log_text(
    tmp_path: Path, environ: dict[str, str], terminal: bool, expected: str | None
) -> None:
    config = ClusterConfig.from_env({"VAR_DIR": str(tmp_path), **environ}, terminal=terminal)

    assert config.env.get("LOG_FORMAT") == expected
