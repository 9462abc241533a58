"""An HTTP server on loopback that the tests control: an attacker's JWKS, or an issuer's gone bad.

It counts every request by path, so a test can prove that a verifier never fetched a URL an
attacker planted in a token header, or fetched the real JWKS at most once per cooldown. What it
answers is a :data:`Behaviour` the test swaps at will: a JWKS, garbage, a redirect, a huge body,
or a body drip-fed a byte at a time. It runs in a thread, so tests stay synchronous.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Behaviour = Callable[["AttackerServer", BaseHTTPRequestHandler], None]

_CHUNK = 64 * 1024


class AttackerServer:
    """The server's state: what it answers, who asked, and how its long answers ended."""

    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self._lock = threading.Lock()
        self._hits: Counter[str] = Counter()
        self.stopping = threading.Event()
        #: Set when a huge or drip-fed answer ended, with the bytes of body written by then.
        self.answer_ended = threading.Event()
        self.body_bytes_sent = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="attacker-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def hits(self, path: str | None = None) -> int:
        """Requests received so far, for one path or in all."""
        with self._lock:
            return self._hits[path] if path is not None else sum(self._hits.values())

    def record(self, path: str) -> None:
        with self._lock:
            self._hits[path] += 1

    def serve(self, behaviour: Behaviour) -> None:
        """Answer every later request with ``behaviour``, and forget how earlier answers ended."""
        self.answer_ended.clear()
        self.body_bytes_sent = 0
        self.behaviour = behaviour

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # A drip-fed answer waits on this event between bytes, so it ends at once.
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler_for(server: AttackerServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            server.record(self.path)
            server.behaviour(server, self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def attacker_server(behaviour: Behaviour) -> Iterator[AttackerServer]:
    """A running :class:`AttackerServer`, always stopped on exit."""
    server = AttackerServer(behaviour)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _head(handler: BaseHTTPRequestHandler, status: int, length: int, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(length))
    handler.end_headers()


def respond(body: bytes, *, status: int = 200, content_type: str = "application/json") -> Behaviour:
    """Answer ``status`` with ``body``."""

    def behaviour(server: AttackerServer, handler: BaseHTTPRequestHandler) -> None:
        _head(handler, status, len(body), content_type)
        handler.wfile.write(body)

    return behaviour


def jwks(document: dict[str, Any]) -> Behaviour:
    """Answer with a JWKS document."""
    return respond(json.dumps(document).encode())


def by_path(routes: dict[str, Behaviour], default: Behaviour) -> Behaviour:
    """Answer each path in ``routes`` with its behaviour, and every other path with ``default``."""

    def behaviour(server: AttackerServer, handler: BaseHTTPRequestHandler) -> None:
        routes.get(handler.path, default)(server, handler)

    return behaviour


def redirect(location: str, status: int = 302) -> Behaviour:
    """Answer with a redirect to ``location`` (on this server, so following it would be counted)."""

    def behaviour(server: AttackerServer, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return behaviour


def huge(size: int, prefix: bytes = b'{"keys": [') -> Behaviour:
    """A well-announced ``size``-byte body that starts like a JWKS and never becomes valid JSON."""

    def behaviour(server: AttackerServer, handler: BaseHTTPRequestHandler) -> None:
        _head(handler, 200, size, "application/json")
        try:
            handler.wfile.write(prefix)
            server.body_bytes_sent = len(prefix)
            filler = b" " * _CHUNK
            while server.body_bytes_sent < size and not server.stopping.is_set():
                chunk = filler[: size - server.body_bytes_sent]
                handler.wfile.write(chunk)
                server.body_bytes_sent += len(chunk)
        except OSError:
            handler.close_connection = True
        finally:
            server.answer_ended.set()

    return behaviour


def drip(interval: float, size: int = 1_000_000) -> Behaviour:
    """A body announced as ``size`` bytes and sent one byte per ``interval`` until the client leaves."""

    def behaviour(server: AttackerServer, handler: BaseHTTPRequestHandler) -> None:
        _head(handler, 200, size, "application/json")
        try:
            while server.body_bytes_sent < size and not server.stopping.wait(interval):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                server.body_bytes_sent += 1
        except OSError:
            handler.close_connection = True
        finally:
            server.answer_ended.set()

    return behaviour
