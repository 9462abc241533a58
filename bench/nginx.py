"""Debian's nginx as a plain reverse proxy in front of orders: the hop users would otherwise pick.

Started by the bench on a free loopback port from a configuration generated into a temporary
directory (``nginx -c <conf> -p <dir>``, ``daemon off``), and stopped when the block ends, so
no system nginx and no port of its own is involved. It routes ``/api/orders`` as the gateway
does, over pooled keep-alive connections, with one worker like the gateway's one process; it
checks no token (the gateway does, and orders again), so the comparison is generous to it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

READY_WITHIN_SECONDS = 10.0

_CONFIG = """\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream orders {{
        server {upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/orders {{
            proxy_pass http://orders/orders;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {upstream};
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def nginx_path() -> str:
    """The nginx binary, or an exit that says how to install it."""
    path = shutil.which("nginx") or next(
        (candidate for candidate in ("/usr/sbin/nginx", "/sbin/nginx") if Path(candidate).exists()), None
    )
    if path is None:
        raise SystemExit(
            "nginx is not installed (Debian: apt-get install -y nginx; then: service nginx stop)"
        )
    return path


def config(root: Path, port: int, upstream: str) -> str:
    """The configuration text: listen on ``127.0.0.1:port``, proxy ``/api/orders`` to ``upstream``."""
    return _CONFIG.format(root=root, port=port, upstream=upstream)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def reverse_proxy(orders_url: str, work_dir: Path) -> Iterator[str]:
    """nginx in front of ``orders_url`` while the block runs; yields its base URL."""
    root = work_dir / "nginx"
    root.mkdir()
    # Workers drop to an unprivileged user when started as root: they must reach their temp paths.
    root.chmod(0o755)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / name).mkdir(mode=0o1777)
        (root / name).chmod(0o1777)
    port = _free_port()
    conf = root / "nginx.conf"
    conf.write_text(config(root, port, urlsplit(orders_url).netloc))
    process = subprocess.Popen(  # noqa: S603 - nginx with our own arguments
        [nginx_path(), "-c", str(conf), "-p", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(process, url, root)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, root: Path) -> None:
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
            log = (root / "error.log").read_text() if (root / "error.log").exists() else ""
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{errors}{log}")
        try:
            # Any answer from orders through nginx (401 without a token) means the hop works.
            if httpx.get(f"{url}/api/orders", timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not answer on {url} within {READY_WITHIN_SECONDS:g} s")
