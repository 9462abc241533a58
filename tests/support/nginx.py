"""Debian's real nginx and a plain Python ``http.server``, as children of the test on loopback ports.

nginx runs from a configuration written into its own temporary prefix (``-p``, ``daemon off``,
every temp path inside it), so no system nginx, no system configuration and no privileged port
is involved. The plain upstream serves a directory with the standard library's file server and
appends one JSON line per request (path and headers) to a log the test reads.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploy.processes import free_port, with_parent_death_signal
from tests.support.polling import poll

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/sbin/nginx")
READY_WITHIN_SECONDS = 15.0

_MAIN_CONFIG = """\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{http}
}}
"""

# The standard library's file server, plus a request log of its own: the path and every header.
_PLAIN_UPSTREAM = """\
import functools, http.server, json, sys
directory, port, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Handler(http.server.SimpleHTTPRequestHandler):
    def log_request(self, code="-", size="-"):
        entry = {"method": self.command, "path": self.path, "status": str(code),
                 "headers": [[name.lower(), value] for name, value in self.headers.items()]}
        with open(log_path, "a") as log:
            log.write(json.dumps(entry) + "\\n")

server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=directory))
server.serve_forever()
"""


def nginx_binary() -> str | None:
    """Debian's nginx, or None where it is not installed."""
    return shutil.which("nginx") or next(
        (candidate for candidate in NGINX_CANDIDATES if Path(candidate).is_file()), None
    )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_for_port(process: subprocess.Popen[bytes], port: int, what: str, log: Path | None = None) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            details = log.read_text() if log is not None and log.exists() else ""
            raise RuntimeError(
                f"{what} exited with status {process.returncode} before it listened:\n{details}"
            )
        return _accepts(port)

    poll(ready, within=READY_WITHIN_SECONDS, what=f"{what} to listen on 127.0.0.1:{port}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RequestLog:
    """What the plain upstream has received, one entry per request, oldest first."""

    def __init__(self, path: Path):
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


@contextmanager
def plain_upstream(directory: Path, log_path: Path) -> Iterator[tuple[str, RequestLog]]:
    """``http.server`` serving ``directory`` on a free port; yields its ``host:port`` and its log."""
    port = free_port()
    process = subprocess.Popen(
        with_parent_death_signal(
            [sys.executable, "-c", _PLAIN_UPSTREAM, str(directory), str(port), str(log_path)]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(process, port, "the plain upstream")
        yield f"127.0.0.1:{port}", RequestLog(log_path)
    finally:
        _stop(process)


@contextmanager
def nginx(binary: str, http_block: str, port: int, work_dir: Path) -> Iterator[Path]:
    """nginx with ``http_block`` inside its ``http { }``, once it accepts on ``port``; yields its prefix."""
    root = work_dir / "nginx"
    root.mkdir()
    # Started as root, the worker drops to an unprivileged user: it must reach its temp paths.
    root.chmod(0o755)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / name).mkdir()
        (root / name).chmod(0o1777)
    config = root / "nginx.conf"
    config.write_text(_MAIN_CONFIG.format(root=root, http=http_block))
    checked = subprocess.run(
        [binary, "-t", "-q", "-e", str(root / "error.log"), "-c", str(config), "-p", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if checked.returncode != 0:
        raise RuntimeError(f"nginx refused the configuration:\n{checked.stderr}")
    process = subprocess.Popen(
        with_parent_death_signal([binary, "-e", str(root / "error.log"), "-c", str(config), "-p", str(root)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(process, port, "nginx", root / "error.log")
        yield root
    finally:
        _stop(process)
