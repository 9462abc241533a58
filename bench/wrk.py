"""Drive wrk, the load generator: one scenario in, one parsed result out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LUA_DIR = Path(__file__).parent / "lua"
_MARKER = "BENCH_JSON "


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    # Microseconds of CPU per request, per service, over the measured window (see bench.cpu).
    cpu_us: Mapping[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ms_per_request(self) -> float:
        """Server time per request at saturation, the inverse of throughput."""
        return 1000.0 / self.rps if self.rps else float("inf")


@dataclass(frozen=True)
class Load:
    """How hard to push: wrk threads, open connections and duration."""

    threads: int = 1
    connections: int = 16
    seconds: int = 10


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    return path


def run(url: str, load: Load, script: str, env: Mapping[str, str] | None = None) -> WrkResult:
    """Run ``lua/<script>.lua`` against ``url`` and return its numbers."""
    command = [
        wrk_path(),
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{load.seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_DIR / f"{script}.lua"),
        url,
    ]
    child_env = {**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), **(env or {})}
    completed = subprocess.run(  # noqa: S603 - wrk with our own arguments
        command, capture_output=True, text=True, env=child_env, timeout=load.seconds + 60, check=False
    )
    result = parse(completed.stdout)
    if result is None:
        raise RuntimeError(f"wrk gave no result for {url}:\n{completed.stdout}\n{completed.stderr}")
    return result


def parse(stdout: str) -> WrkResult | None:
    """The result line ``lua/report.lua`` prints, or None when wrk printed none."""
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            data = json.loads(line[len(_MARKER) :])
            break
    else:
        return None
    errors = sum(
        data[name] for name in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000.0,
        p99_ms=data["p99_us"] / 1000.0,
    )
