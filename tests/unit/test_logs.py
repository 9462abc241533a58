"""Log format and noise: text on a terminal, JSON in pipes and containers, quiet probes in dev."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from shared.core import SettingsError
from shared.core.logs import ACCESS_LOGGER, LogSettings, configure_logging
from shared.web import build_app


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging rewires the root logger; every test here leaves it as pytest set it up."""
    root, access = logging.getLogger(), logging.getLogger(ACCESS_LOGGER)
    handlers, level, filters = root.handlers[:], root.level, access.filters[:]
    try:
        yield
    finally:
        root.handlers[:], access.filters[:] = handlers, filters
        root.setLevel(level)


@pytest.fixture
def terminal() -> Iterator[TextIO]:
    """A real pseudo-terminal's slave end, as a process's stderr is when run from a shell."""
    primary, secondary = os.openpty()
    stream = open(secondary, "w")  # noqa: SIM115 - closed below, with the primary end
    try:
        yield stream
    finally:
        stream.close()
        os.close(primary)


@pytest.mark.parametrize(
    ("environ", "on_terminal", "expected"),
    [
        pytest.param({}, True, "text", id="terminal"),
        pytest.param({}, False, "json", id="pipe"),
        pytest.param({"LOG_FORMAT": "json"}, True, "json", id="json-asked-on-a-terminal"),
        pytest.param({"LOG_FORMAT": "TEXT"}, False, "text", id="text-asked-in-a-pipe"),
    ],
)
def test_the_format_is_text_on_a_terminal_and_json_elsewhere_unless_chosen(
    environ: dict[str, str], on_terminal: bool, expected: str
) -> None:
    assert LogSettings.from_env(environ, terminal=on_terminal).format == expected


def test_the_images_log_json_even_on_a_terminal() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^ENV .*\bLOG_FORMAT=json\b", dockerfile, re.MULTILINE | re.DOTALL)


def test_an_unknown_log_format_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="LOG_FORMAT must be one of auto, text, json, got 'yaml'"):
        LogSettings.from_env({"LOG_FORMAT": "yaml"}, terminal=True)


def test_a_terminal_gets_short_text_lines_with_the_extras(terminal: TextIO) -> None:
    configure_logging("orders", environ={}, stream=terminal)
    handler = logging.getLogger().handlers[0]
    record = logging.LogRecord(
        "shared.access", logging.INFO, __file__, 1, "%s %s %d", ("GET", "/x", 200), None
    )
    record.duration_ms = 1.5

    line = handler.format(record)

    assert line.endswith(" info    shared.access: GET /x 200  duration_ms=1.5")
    assert not line.startswith("{")


def test_a_pipe_gets_one_json_object_per_line() -> None:
    stream = io.StringIO()
    configure_logging("orders", environ={}, stream=stream)

    logging.getLogger("probe").info("hello %s", "there", extra={"answer": 42})

    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "hello there"
    assert entry["service"] == "orders"
    assert entry["answer"] == 42


@contextlib.asynccontextmanager
async def _nothing(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {}


def _requests(environ: dict[str, str], level: str = "info", *, ready: bool = True) -> list[str]:
    """The access lines a service writes for one probe of each kind and one ordinary request."""

    async def readiness(request: Request) -> dict[str, Any]:
        return {"redis": ready}

    async def hello(request: Request) -> Response:
        return JSONResponse({"hello": "world"})

    stream = io.StringIO()
    configure_logging("orders", level, environ=environ, stream=stream)
    app = build_app([Route("/hello", hello)], lifespan=_nothing, readiness=readiness)
    with TestClient(app) as client:
        for path in ("/healthz", "/readyz", "/metrics", "/hello"):
            client.get(path)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [f"{entry['level']} {entry['msg']}" for entry in entries if entry["logger"] == ACCESS_LOGGER]


def test_in_dev_health_checks_and_scrapes_are_not_logged_at_info() -> None:
    assert _requests({"APP_ENV": "dev"}) == ["info GET /hello 200"]


def test_in_dev_probes_are_debug_lines_even_when_not_ready() -> None:
    assert _requests({"APP_ENV": "dev"}, "debug") == [
        "debug GET /healthz 200",
        "debug GET /readyz 200",
        "debug GET /metrics 200",
        "info GET /hello 200",
    ]
    assert _requests({"APP_ENV": "dev"}, ready=False) == ["info GET /hello 200"]
    assert "debug GET /readyz 503" in _requests({"APP_ENV": "dev"}, "debug", ready=False)


def test_outside_dev_every_probe_is_logged_at_info() -> None:
    assert _requests({}) == [
        "info GET /healthz 200",
        "info GET /readyz 200",
        "info GET /metrics 200",
        "info GET /hello 200",
    ]
