"""Auth configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.auth.domain import LoginThrottlePolicy, RateLimit
from services.auth.key_schedule import RotationPolicy
from services.auth.redis_client import parse_url as parse_redis_url
from shared.core import (
    ProxyNetwork,
    Secret,
    SettingsError,
    env_bool,
    env_environment,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
    trusted_proxies_from_env,
)
from shared.web import EdgeSettings, TracingSettings

DEMO_PASSWORD = "correct-horse-battery-staple"  # noqa: S105 - documented dev-only demo password


@dataclass(frozen=True)
class Settings:
    """Everything auth needs. Secrets are :class:`Secret`, so a repr never shows them."""

    environment: str
    host: str
    port: int
    workers: int
    log_level: str
    redis_url: Secret
    redis_timeout: float
    issuer: str
    public_origin: str
    keys_dir: Path
    session_secret: Secret
    audiences: tuple[str, ...]
    access_token_ttl: int
    session_idle_timeout: int
    session_absolute_timeout: int
    cookie_secure: bool
    jwks_max_age: int
    rotation: RotationPolicy
    demo_password: Secret | None
    trusted_proxies: tuple[ProxyNetwork, ...]
    login_throttle: LoginThrottlePolicy
    token_rate: RateLimit
    edge: EdgeSettings
    tracing: TracingSettings = field(default_factory=TracingSettings)
    # Seconds between two looks at the revocation set's version in Redis (the propagation floor).
    revocations_poll_interval: float = 0.1
    # Long-polls of the revocation feed held at once per worker; past it one is answered at once.
    revocations_max_waiters: int = 32
    # Seconds after a rotation during which the handle rotated away may be presented once more
    # and get the same successor back: a retry of a response lost to the network (0: none).
    native_refresh_grace: int = 10
    # Sessions one user may hold at once; a new login past it ends the least recently used.
    sessions_per_user: int = 100
    # Failed refreshes and native logouts (unknown or reused handles) one client address may make.
    refresh_failures: RateLimit = field(default_factory=lambda: RateLimit(20, 60))

    @property
    def dev(self) -> bool:
        return self.environment == "dev"

    @property
    def cookie_name(self) -> str:
        # __Host- makes the browser refuse the cookie unless Secure, Path=/ and host-only.
        return "__Host-session" if self.cookie_secure else "session"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        environment = env_environment(environ)
        dev = environment == "dev"
        public_origin = env_str(environ, "PUBLIC_ORIGIN", "http://localhost:8000").rstrip("/")
        origin_parts = urlsplit(public_origin)
        if (
            origin_parts.scheme not in ("http", "https")
            or not origin_parts.hostname
            or "@" in origin_parts.netloc
            or f"{origin_parts.scheme}://{origin_parts.netloc}" != public_origin
        ):
            raise SettingsError(f"PUBLIC_ORIGIN must be scheme://host[:port], got {public_origin!r}")
        cookie_secure = env_bool(environ, "COOKIE_SECURE", True)
        if not cookie_secure and not dev:
            raise SettingsError("COOKIE_SECURE=false is only allowed with APP_ENV=dev")
        idle = env_int(environ, "SESSION_IDLE_TIMEOUT_SECONDS", 30 * 60, minimum=1)
        absolute = env_int(environ, "SESSION_ABSOLUTE_TIMEOUT_SECONDS", 24 * 3600, minimum=1)
        if idle > absolute:
            raise SettingsError(
                "SESSION_IDLE_TIMEOUT_SECONDS must not exceed SESSION_ABSOLUTE_TIMEOUT_SECONDS"
            )
        audiences = env_list(environ, "TOKEN_AUDIENCES", ("orders",))
        rotation = rotation_policy(environ)
        edge = EdgeSettings.from_env(environ)
        max_waiters = env_int(environ, "REVOCATIONS_MAX_WAITERS", 32, minimum=0)
        if max_waiters >= edge.max_in_flight:
            # Held long-polls would take every in-flight slot and logins would get 503.
            raise SettingsError("REVOCATIONS_MAX_WAITERS must be below EDGE_MAX_IN_FLIGHT")
        return cls(
            environment=environment,
            host=env_str(environ, "AUTH_HOST", "127.0.0.1"),
            port=env_int(environ, "AUTH_PORT", 8001, minimum=1, maximum=65535),
            workers=env_int(environ, "AUTH_WORKERS", 1, minimum=1, maximum=64),
            log_level=env_str(environ, "LOG_LEVEL", "info"),
            redis_url=_redis_url(environ),
            redis_timeout=env_float(environ, "REDIS_TIMEOUT_SECONDS", 0.5, minimum=0.05),
            issuer=env_str(environ, "TOKEN_ISSUER", "http://localhost:8000"),
            public_origin=public_origin,
            keys_dir=Path(env_str(environ, "AUTH_KEYS_DIR", "var/keys")),
            session_secret=env_secret(environ, "SESSION_SECRET", dev=dev),
            audiences=audiences,
            access_token_ttl=rotation.token_ttl,
            session_idle_timeout=idle,
            session_absolute_timeout=absolute,
            cookie_secure=cookie_secure,
            jwks_max_age=rotation.jwks_max_age,
            rotation=rotation,
            demo_password=Secret(env_str(environ, "DEMO_PASSWORD", DEMO_PASSWORD)) if dev else None,
            trusted_proxies=trusted_proxies_from_env(environ),
            login_throttle=_login_throttle(environ),
            token_rate=RateLimit(
                env_int(environ, "TOKEN_RATE_LIMIT", 60, minimum=1),
                env_int(environ, "TOKEN_RATE_WINDOW_SECONDS", 60, minimum=1, maximum=86400),
            ),
            tracing=TracingSettings.from_env(environ),
            edge=edge,
            revocations_poll_interval=env_float(environ, "REVOCATIONS_POLL_SECONDS", 0.1, minimum=0.01),
            revocations_max_waiters=max_waiters,
            sessions_per_user=env_int(environ, "SESSIONS_PER_USER", 100, minimum=1, maximum=10000),
            native_refresh_grace=env_int(environ, "NATIVE_REFRESH_GRACE_SECONDS", 10, minimum=0, maximum=60),
            refresh_failures=RateLimit(
                env_int(environ, "REFRESH_FAILURE_LIMIT", 20, minimum=1),
                env_int(environ, "REFRESH_FAILURE_WINDOW_SECONDS", 60, minimum=1, maximum=86400),
            ),
        )


def _redis_url(environ: Mapping[str, str]) -> Secret:
    # The URL may carry a password, so it is handled as a secret and never repeated in an error.
    url = env_str(environ, "REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        parse_redis_url(url)
    except ValueError as exc:
        raise SettingsError(f"REDIS_URL {exc}") from None
    return Secret(url)


def _login_throttle(environ: Mapping[str, str]) -> LoginThrottlePolicy:
    window = env_int(environ, "LOGIN_THROTTLE_WINDOW_SECONDS", 900, minimum=1, maximum=86400)
    return LoginThrottlePolicy(
        per_ip=RateLimit(env_int(environ, "LOGIN_IP_LIMIT", 100, minimum=1), window),
        per_account_ip=RateLimit(env_int(environ, "LOGIN_ACCOUNT_IP_LIMIT", 10, minimum=1), window),
        per_account=RateLimit(env_int(environ, "LOGIN_ACCOUNT_LIMIT", 100, minimum=1), window),
    )


def rotation_policy(environ: Mapping[str, str]) -> RotationPolicy:
    """The key rotation timings, read alone so the ``keys`` commands need no secrets."""
    return RotationPolicy(
        token_ttl=env_int(environ, "ACCESS_TOKEN_TTL_SECONDS", 300, minimum=30, maximum=300),
        # The verifiers' leeway is the clock skew the deployment allows; the same variable.
        clock_skew=env_int(environ, "TOKEN_LEEWAY_SECONDS", 10, maximum=30),
        jwks_max_age=env_int(environ, "JWKS_MAX_AGE_SECONDS", 300, minimum=0, maximum=86400),
        reload_interval=env_float(environ, "KEYS_RELOAD_SECONDS", 5.0, minimum=0.05),
        margin=env_int(environ, "KEY_ROTATION_MARGIN_SECONDS", 30, minimum=0, maximum=3600),
    )
