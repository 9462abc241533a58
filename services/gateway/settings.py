"""Gateway settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared import SettingsError, VerifierSettings, env_float, env_int, env_str

MAX_BODY_BYTES = 1024 * 1024


def _upstream_url(environ: Mapping[str, str], name: str, default: str) -> str:
    """An upstream's origin (``http(s)://host[:port]``); a path would silently shift every route."""
    value = env_str(environ, name, default)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise SettingsError(f"{name} must be an origin without path, query or credentials, got {value!r}")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class GatewaySettings:
    """Where the gateway listens, where its upstreams are, and how long it waits for them and for clients."""

    host: str
    port: int
    workers: int
    log_level: str
    auth_url: str
    orders_url: str
    upstream_timeout: float
    upstream_connect_timeout: float
    upstream_max_connections: int
    request_body_timeout: float
    verifier: VerifierSettings
    max_body_bytes: int = MAX_BODY_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewaySettings:
        """Build the settings, naming the variable at fault when one is malformed."""
        return cls(
            host=env_str(environ, "GATEWAY_HOST", "127.0.0.1"),
            port=env_int(environ, "GATEWAY_PORT", 8000, minimum=1, maximum=65535),
            workers=env_int(environ, "GATEWAY_WORKERS", 1, minimum=1, maximum=64),
            log_level=env_str(environ, "LOG_LEVEL", "info"),
            auth_url=_upstream_url(environ, "AUTH_URL", "http://127.0.0.1:8001"),
            orders_url=_upstream_url(environ, "ORDERS_URL", "http://127.0.0.1:8002"),
            upstream_timeout=env_float(environ, "UPSTREAM_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            upstream_connect_timeout=env_float(environ, "UPSTREAM_CONNECT_TIMEOUT_SECONDS", 2.0, minimum=0.1),
            upstream_max_connections=env_int(environ, "UPSTREAM_MAX_CONNECTIONS", 100, minimum=1),
            request_body_timeout=env_float(environ, "REQUEST_BODY_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            verifier=VerifierSettings.from_env(environ),
        )

    def upstream_urls(self) -> dict[str, str]:
        """The upstream origins by the names the route table uses."""
        return {"auth": self.auth_url, "orders": self.orders_url}
