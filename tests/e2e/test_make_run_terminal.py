"""``make run`` in a terminal, as a newcomer sees it: the banner stays on the first screen."""

from __future__ import annotations

import fcntl
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from deploy.devcluster import REPO_ROOT
from deploy.processes import free_port
from services.auth.settings import DEMO_PASSWORD
from tests.support.processes import descendants

pytestmark = pytest.mark.e2e

# The classic first screen: what a terminal shows without scrolling.
ROWS, COLUMNS = 24, 80
# How long a newcomer may take to read the banner, open the page and look back: at the default
# intervals the gateway checks its upstreams 15 times meanwhile, auth rereads its keys 6 times
# and an orchestrator asks for /readyz 30 times. The test makes each of them happen as often,
# in a fifth of the time: a line logged per event would still scroll the banner away.
IDLE_SECONDS = 30.0
SPEEDUP = 5
FASTER_INTERVALS = {"UPSTREAM_HEALTH_INTERVAL_SECONDS": 2.0 / SPEEDUP, "KEYS_RELOAD_SECONDS": 5.0 / SPEEDUP}
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Terminal:
    """A process on a pseudo-terminal of ROWS x COLUMNS, with everything it wrote kept."""

    process: subprocess.Popen[bytes]
    chunks: list[bytes] = field(default_factory=list)

    def text(self) -> str:
        return _ESCAPES.sub("", b"".join(self.chunks).decode("utf-8", errors="replace")).replace("\r", "")

    def screen(self) -> list[str]:
        """The last ROWS rows, with long lines wrapped at COLUMNS as the terminal wraps them."""
        rows: list[str] = []
        for line in self.text().rstrip("\n").split("\n"):
            wrapped = max(1, math.ceil(len(line) / COLUMNS))
            rows.extend(line[index * COLUMNS : (index + 1) * COLUMNS] for index in range(wrapped))
        return rows[-ROWS:]

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.text().splitlines()[-30:])
                raise AssertionError(f"no {text!r} (exit status {self.process.poll()}):\n{tail}")
            time.sleep(0.1)


def _read(primary: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # EIO: every process holding the terminal has closed it
            return
        if not data:
            return
        chunks.append(data)


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[Terminal, int]]:
    """``make run`` on a fresh pseudo-terminal, on free ports; stopped with Ctrl-C, killed if it must be."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    ports = {name: free_port() for name in ("GATEWAY_PORT", "AUTH_PORT", "ORDERS_PORT", "REDIS_PORT")}
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(("LOG_", "DEMO_"))}
    env = {**inherited, **{name: str(port) for name, port in ports.items()}, "VAR_DIR": str(tmp_path / "var")}
    env["TERM"] = "xterm"
    env.update({name: str(seconds) for name, seconds in FASTER_INTERVALS.items()})
    primary, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    process = subprocess.Popen(
        [make, "--no-print-directory", "run"],
        cwd=REPO_ROOT,
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    terminal = Terminal(process)
    reader = threading.Thread(target=_read, args=(primary, terminal.chunks), daemon=True)
    reader.start()
    try:
        yield terminal, ports["GATEWAY_PORT"]
    finally:
        children = descendants(process.pid)
        if process.poll() is None:
            # Ctrl-C reaches make and the cluster runner, which stops its services in order.
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for pid in children:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        reader.join(timeout=5)
        os.close(primary)


def test_make_run_keeps_the_url_and_demo_password_on_the_first_screen(
    make_run: tuple[Terminal, int],
) -> None:
    terminal, gateway_port = make_run
    url = f"http://localhost:{gateway_port}"
    # Cold, `make run` may install the virtualenv first; warm it is ready within seconds.
    terminal.wait_for(f"demo password: {DEMO_PASSWORD}", timeout=180)

    # Once a second for IDLE_SECONDS, sped up: at least as many requests and as long as that.
    for _ in range(int(IDLE_SECONDS)):
        assert terminal.process.poll() is None, terminal.text()[-3000:]
        # What an orchestrator would do meanwhile, on top of the gateway's own upstream checks.
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        time.sleep(1 / SPEEDUP)

    screen = terminal.screen()
    shown = "\n".join(screen)
    assert any(f"ready: {url}" in row for row in screen), shown
    assert any(f"demo password: {DEMO_PASSWORD}" in row for row in screen), shown
    # On a terminal the services write text lines, not JSON, after their `name | ` prefix.
    service_lines = [
        line for line in terminal.text().splitlines() if re.match(r"^(auth|orders|gateway) +\| ", line)
    ]
    assert service_lines, shown
    assert not [line for line in service_lines if line.split("| ", 1)[1].startswith("{")], shown
