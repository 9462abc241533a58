"""The limits of every service's HTTP edge: request heads, deadlines, idle connections, concurrency.

Defaults sit close to what nginx and Envoy do out of the box, so a service here is no easier to
hold down than one behind either of them; each is an ``EDGE_*`` variable, the same for every
service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.core.settings import SettingsError, env_float, env_int

#: What a refused client is told to wait (``Retry-After``) when a worker is at its cap.
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class EdgeSettings:
    """The edge limits of one worker process.

    ``max_header_bytes`` counts the header fields (name, value and 4 bytes of framing each);
    ``max_head_bytes`` counts the whole head as it arrives on the wire, request line included,
    so a head that never ends is cut off before it is parsed into anything.
    """

    #: Envoy's ``max_request_headers_count`` default.
    max_headers: int = 100
    #: The header fields; nginx refuses one line over 8 KiB (``large_client_header_buffers``).
    max_header_bytes: int = 8 * 1024
    #: The header fields plus a request line as long as nginx's 8 KiB buffer allows.
    max_head_bytes: int = 16 * 1024
    #: Connection open (or a request's first byte) to the end of its head; Envoy's edge guide says 10 s.
    head_timeout: float = 10.0
    #: The first read of a body to its last byte; nginx gives 60 s between reads, we give 30 s in all.
    body_timeout: float = 30.0
    #: An idle keep-alive connection closes after this: uvicorn's default, and httpx's pool expiry.
    keep_alive_timeout: float = 5.0
    #: Open connections per worker; nginx's ``worker_connections`` default.
    max_connections: int = 512
    #: Requests being answered at once per worker; past it a request gets 503 at once.
    max_in_flight: int = 256

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EdgeSettings:
        """Read the ``EDGE_*`` variables, naming the one at fault when it is malformed."""
        defaults = cls()
        settings = cls(
            max_headers=env_int(environ, "EDGE_MAX_HEADERS", defaults.max_headers, minimum=1),
            max_header_bytes=env_int(
                environ, "EDGE_MAX_HEADER_BYTES", defaults.max_header_bytes, minimum=256
            ),
            max_head_bytes=env_int(environ, "EDGE_MAX_HEAD_BYTES", defaults.max_head_bytes, minimum=256),
            head_timeout=env_float(environ, "EDGE_HEAD_TIMEOUT_SECONDS", defaults.head_timeout, minimum=0.05),
            body_timeout=env_float(environ, "EDGE_BODY_TIMEOUT_SECONDS", defaults.body_timeout, minimum=0.05),
            keep_alive_timeout=env_float(
                environ, "EDGE_KEEP_ALIVE_SECONDS", defaults.keep_alive_timeout, minimum=0.05
            ),
            max_connections=env_int(environ, "EDGE_MAX_CONNECTIONS", defaults.max_connections, minimum=1),
            max_in_flight=env_int(environ, "EDGE_MAX_IN_FLIGHT", defaults.max_in_flight, minimum=1),
        )
        if settings.max_head_bytes < settings.max_header_bytes:
            raise SettingsError("EDGE_MAX_HEAD_BYTES must be at least EDGE_MAX_HEADER_BYTES")
        return settings
