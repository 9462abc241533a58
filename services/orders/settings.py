"""Orders settings, read once from the environment and checked before anything starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.core import SettingsError, env_float, env_int, env_str
from shared.web import EdgeSettings, TracingSettings, VerifierSettings

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEFAULT_MAX_ORDERS_PER_USER = 1000
DEFAULT_CREATE_RATE = 10.0
DEFAULT_CREATE_BURST = 20


@dataclass(frozen=True)
class OrdersSettings:
    """Where the service listens, where its data lives, and how it trusts access tokens."""

    host: str
    port: int
    workers: int
    db_path: Path
    log_level: str
    verifier: VerifierSettings
    edge: EdgeSettings
    tracing: TracingSettings = field(default_factory=TracingSettings)
    # The most orders one user may hold; placing one more is 409 ``order_quota_exceeded``.
    max_orders_per_user: int = DEFAULT_MAX_ORDERS_PER_USER
    # Orders one user may place per second in one worker process, and the burst allowed above it.
    create_rate: float = DEFAULT_CREATE_RATE
    create_burst: int = DEFAULT_CREATE_BURST

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OrdersSettings:
        """Build from ``ORDERS_*``, ``LOG_LEVEL`` and the shared verifier variables."""
        log_level = env_str(environ, "LOG_LEVEL", "info").lower()
        if log_level not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        return cls(
            host=env_str(environ, "ORDERS_HOST", "127.0.0.1"),
            port=env_int(environ, "ORDERS_PORT", 8002, minimum=1, maximum=65535),
            workers=env_int(environ, "ORDERS_WORKERS", 1, minimum=1, maximum=64),
            db_path=Path(env_str(environ, "ORDERS_DB_PATH", "var/orders.sqlite3")),
            log_level=log_level,
            verifier=VerifierSettings.from_env(environ),
            edge=EdgeSettings.from_env(environ),
            tracing=TracingSettings.from_env(environ),
            max_orders_per_user=env_int(
                environ, "ORDERS_MAX_PER_USER", DEFAULT_MAX_ORDERS_PER_USER, minimum=1, maximum=10**9
            ),
            create_rate=env_float(environ, "ORDERS_CREATE_RATE", DEFAULT_CREATE_RATE, minimum=0.01),
            create_burst=env_int(
                environ, "ORDERS_CREATE_BURST", DEFAULT_CREATE_BURST, minimum=1, maximum=10**9
            ),
        )
