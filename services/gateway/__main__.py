"""Run the gateway: ``python -m services.gateway``."""

from __future__ import annotations

import os

from services.gateway.settings import GatewaySettings
from shared import SettingsError, serve


def main() -> None:
    """Serve the gateway with the settings from the environment (read here to fail fast)."""
    try:
        settings = GatewaySettings.from_env(os.environ)
    except SettingsError as exc:
        raise SystemExit(f"gateway: {exc}") from None
    serve(
        "services.gateway.app:app_from_env",
        service="gateway",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
