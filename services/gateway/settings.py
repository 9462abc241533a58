"""Gateway settings, read once from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from services.gateway import configured_routes, cors
from services.gateway.domain import ROUTE_TABLE, Route, audiences, upstream_names
from shared.core import (
    ProxyNetwork,
    SettingsError,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_trusted_proxies,
    trusted_proxies_from_env,
)
from shared.web import EdgeSettings, TracingSettings, VerifierSettings

MAX_BODY_BYTES = 1024 * 1024
# Up to this size an upstream answer is read whole before it is sent (nginx's proxy_buffering):
# the upstream connection goes back to the pool at once, whatever the client's pace.
RESPONSE_BUFFER_BYTES = 64 * 1024
# The public OpenAPI document is built from the upstreams' own: each is fetched at most this
# often, and one larger than this is refused (it is read into memory whole).
OPENAPI_CACHE_SECONDS = 60.0
OPENAPI_MAX_BYTES = 1024 * 1024


def _origin(name: str, value: str) -> str:
    """An upstream's origin (``http(s)://host[:port]``); a path would silently shift every route."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise SettingsError(f"{name} must be an origin without path, query or credentials, got {value!r}")
    return f"{parts.scheme}://{parts.netloc}"


# Forward-auth answers only peers at these addresses unless FORWARD_AUTH_ALLOWED_FROM says otherwise.
FORWARD_AUTH_ALLOWED_FROM = ("127.0.0.1", "::1")
_AUDIENCE = re.compile(r"[a-z][a-z0-9._-]*")


def _forward_auth_audiences(environ: Mapping[str, str]) -> tuple[str, ...]:
    audiences = env_list(environ, "FORWARD_AUTH_AUDIENCES", ())
    for audience in audiences:
        if not _AUDIENCE.fullmatch(audience):
            raise SettingsError(
                f"FORWARD_AUTH_AUDIENCES: {audience!r} is not an audience name ([a-z][a-z0-9._-]*)"
            )
    return tuple(dict.fromkeys(audiences))


def _forward_auth_allowed_from(environ: Mapping[str, str]) -> tuple[ProxyNetwork, ...]:
    try:
        return parse_trusted_proxies(
            env_list(environ, "FORWARD_AUTH_ALLOWED_FROM", FORWARD_AUTH_ALLOWED_FROM)
        )
    except ValueError as exc:
        raise SettingsError(f"FORWARD_AUTH_ALLOWED_FROM: {exc}") from None


# How long a browser may keep a preflight answer unless CORS_MAX_AGE_SECONDS says otherwise.
CORS_MAX_AGE_SECONDS = 600


def _cors_allowed_origins(environ: Mapping[str, str]) -> tuple[str, ...]:
    try:
        origins = tuple(cors.parse_origin(value) for value in env_list(environ, "CORS_ALLOWED_ORIGINS", ()))
    except ValueError as exc:
        raise SettingsError(f"CORS_ALLOWED_ORIGINS: {exc}") from None
    return tuple(dict.fromkeys(origins))


# Where each upstream listens when nothing says otherwise: the ports of a local ``make run``. A new
# upstream needs no entry here; without one its ``<NAME>_URL`` is required.
LOCAL_ORIGINS: Mapping[str, str] = {"auth": "http://127.0.0.1:8001", "orders": "http://127.0.0.1:8002"}


def url_variable(upstream: str) -> str:
    """The variable holding ``upstream``'s origins: ``AUTH_URL`` for ``auth``."""
    return f"{upstream.upper()}_URL"


def _upstream_urls(environ: Mapping[str, str], upstream: str) -> tuple[str, ...]:
    """One origin, or several separated by commas (replicas the gateway balances across)."""
    name = url_variable(upstream)
    default = LOCAL_ORIGINS.get(upstream)
    values = env_list(environ, name, (default,) if default is not None else ())
    if not values:
        raise SettingsError(f"{name} is required: the route table sends requests to {upstream!r}")
    origins = tuple(_origin(name, value) for value in values)
    if len(set(origins)) != len(origins):
        raise SettingsError(f"{name} lists the same origin twice")
    return origins


@dataclass(frozen=True)
class GatewaySettings:
    """Where the gateway listens, where its upstreams are, and how long it waits for them and for clients."""

    host: str
    port: int
    workers: int
    log_level: str
    # Per upstream name the route table uses, in table order, its origins.
    upstreams: tuple[tuple[str, tuple[str, ...]], ...]
    upstream_timeout: float
    upstream_connect_timeout: float
    upstream_max_connections: int
    request_body_timeout: float
    upstream_health_interval: float
    verifier: VerifierSettings
    edge: EdgeSettings
    tracing: TracingSettings = field(default_factory=TracingSettings)
    # Proxies in front of the gateway (an ingress controller) whose X-Forwarded-For is believed.
    trusted_proxies: tuple[ProxyNetwork, ...] = ()
    max_body_bytes: int = MAX_BODY_BYTES
    # Per upstream name, overriding upstream_max_connections (each upstream has a pool of its own).
    max_connections: tuple[tuple[str, int], ...] = ()
    # Seconds a request waits for a free upstream connection before a 503 upstream_busy.
    upstream_pool_timeout: float = 1.0
    # Seconds a client may take to accept each piece of a streamed answer (nginx's send_timeout).
    client_send_timeout: float = 10.0
    response_buffer_bytes: int = RESPONSE_BUFFER_BYTES
    openapi_cache_seconds: float = OPENAPI_CACHE_SECONDS
    openapi_max_bytes: int = OPENAPI_MAX_BYTES
    # The built-in route table and the routes GATEWAY_ROUTES adds after it.
    routes: tuple[Route, ...] = ROUTE_TABLE
    # Audiences /forward-auth/<audience> answers for (none: forward-auth is off), and the peers it
    # answers (the proxies that ask it; anyone else gets what the route table would answer).
    forward_auth_audiences: tuple[str, ...] = ()
    forward_auth_allowed_from: tuple[ProxyNetwork, ...] = parse_trusted_proxies(FORWARD_AUTH_ALLOWED_FROM)
    # Other origins whose pages may call the routes with an audience (none: CORS is off), and how
    # long their browsers may keep a preflight's answer.
    cors_allowed_origins: tuple[str, ...] = ()
    cors_max_age: int = CORS_MAX_AGE_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str], table: Sequence[Route] = ROUTE_TABLE) -> GatewaySettings:
        """Build the settings, naming the variable at fault when one is malformed or missing.

        The routes are ``table`` and those ``GATEWAY_ROUTES`` adds; the upstreams are the ones they
        route to: each has its origins in ``<NAME>_URL`` and its pool size in
        ``UPSTREAM_<NAME>_MAX_CONNECTIONS``.
        """
        routes = (*table, *configured_routes.parse_routes(environ.get(configured_routes.VARIABLE, ""), table))
        names = upstream_names(routes)
        return cls(
            host=env_str(environ, "GATEWAY_HOST", "127.0.0.1"),
            port=env_int(environ, "GATEWAY_PORT", 8000, minimum=1, maximum=65535),
            workers=env_int(environ, "GATEWAY_WORKERS", 1, minimum=1, maximum=64),
            log_level=env_str(environ, "LOG_LEVEL", "info"),
            upstreams=tuple((name, _upstream_urls(environ, name)) for name in names),
            upstream_timeout=env_float(environ, "UPSTREAM_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            upstream_connect_timeout=env_float(environ, "UPSTREAM_CONNECT_TIMEOUT_SECONDS", 2.0, minimum=0.1),
            upstream_max_connections=(
                default_connections := env_int(environ, "UPSTREAM_MAX_CONNECTIONS", 100, minimum=1)
            ),
            request_body_timeout=env_float(environ, "REQUEST_BODY_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            upstream_health_interval=env_float(environ, "UPSTREAM_HEALTH_INTERVAL_SECONDS", 2.0, minimum=0.1),
            verifier=VerifierSettings.from_env(environ),
            trusted_proxies=trusted_proxies_from_env(environ),
            edge=EdgeSettings.from_env(environ),
            tracing=TracingSettings.from_env(environ),
            max_connections=tuple(
                (
                    name,
                    env_int(
                        environ, f"UPSTREAM_{name.upper()}_MAX_CONNECTIONS", default_connections, minimum=1
                    ),
                )
                for name in names
            ),
            upstream_pool_timeout=env_float(environ, "UPSTREAM_POOL_TIMEOUT_SECONDS", 1.0, minimum=0.01),
            client_send_timeout=env_float(environ, "CLIENT_SEND_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            response_buffer_bytes=env_int(
                environ,
                "UPSTREAM_RESPONSE_BUFFER_BYTES",
                RESPONSE_BUFFER_BYTES,
                minimum=0,
                maximum=16 * 1024 * 1024,
            ),
            openapi_cache_seconds=env_float(
                environ, "OPENAPI_CACHE_SECONDS", OPENAPI_CACHE_SECONDS, minimum=0.0
            ),
            openapi_max_bytes=env_int(
                environ, "OPENAPI_MAX_BYTES", OPENAPI_MAX_BYTES, minimum=1024, maximum=64 * 1024 * 1024
            ),
            routes=routes,
            forward_auth_audiences=_forward_auth_audiences(environ),
            forward_auth_allowed_from=_forward_auth_allowed_from(environ),
            cors_allowed_origins=_cors_allowed_origins(environ),
            cors_max_age=env_int(
                environ,
                "CORS_MAX_AGE_SECONDS",
                CORS_MAX_AGE_SECONDS,
                minimum=0,
                maximum=cors.MAX_AGE_CAP_SECONDS,
            ),
        )

    def audiences(self) -> tuple[str, ...]:
        """Every audience the gateway verifies tokens for, its routes' then forward-auth's, each once."""
        return tuple(dict.fromkeys((*audiences(self.routes), *self.forward_auth_audiences)))

    def upstream_urls(self) -> dict[str, tuple[str, ...]]:
        """The upstream origins by the names the route table uses."""
        return dict(self.upstreams)

    def max_connections_for(self, name: str) -> int:
        """The size of upstream ``name``'s connection pool."""
        return dict(self.max_connections).get(name, self.upstream_max_connections)
