"""Service start-up fails fast, naming the bad variable, before uvicorn is involved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("service", "env", "message"),
    [
        ("auth", {"APP_ENV": "production"}, "auth: SESSION_SECRET is required"),
        ("auth", {"APP_ENV": "staging"}, "auth: APP_ENV must be one of"),
        ("orders", {"ORDERS_PORT": "eighty"}, "orders: ORDERS_PORT must be an integer"),
        ("gateway", {"AUTH_URL": "http://auth:8001/prefix"}, "gateway: AUTH_URL"),
        ("gateway", {"JWKS_TIMEOUT_SECONDS": "inf"}, "gateway: JWKS_TIMEOUT_SECONDS"),
        ("gateway", {"LOG_LEVEL": "verbose"}, "gateway: LOG_LEVEL must be one of"),
        ("gateway", {"GATEWAY_PORT": "0"}, "gateway: GATEWAY_PORT must be in 1..65535"),
    ],
)
def test_a_bad_setting_stops_start_up_with_its_name(service: str, env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
