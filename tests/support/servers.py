"""A real HTTP server for tests that need one: uvicorn on a free 127.0.0.1 port in a thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Literal

import uvicorn
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.polling import poll


class ServerThread:
    """A uvicorn server on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app: Any, *, lifespan: Literal["on", "off"] = "off", **options: Any):
        """``options`` go to ``uvicorn.Config`` as well (the project's protocol, say)."""
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan=lifespan,
            log_level="warning",
            timeout_graceful_shutdown=2,
            # As shared.runtime.serve runs it: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1.
            proxy_headers=False,
            server_header=False,
            **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def port(self) -> int:
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        poll(self._started, within=15, what="the server starting", every=0.01)
        return self

    def _started(self) -> bool:
        if not self.thread.is_alive():
            raise RuntimeError("the server thread exited before it started")
        started: bool = self.server.started
        return started

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextlib.contextmanager
def jwks_server(key: RSAKey) -> Iterator[ServerThread]:
    """A stand-in for auth's key set: ``/.well-known/jwks.json`` publishing ``key``'s public half."""
    public = {**key.as_dict(private=False), "alg": "RS256", "use": "sig"}

    async def jwks(request: Request) -> Response:
        return JSONResponse({"keys": [public]})

    with ServerThread(Starlette(routes=[Route("/.well-known/jwks.json", jwks)])) as server:
        yield server
