"""``python -m services.orders``: serve the orders API under uvicorn."""

from __future__ import annotations

import os

from services.orders.settings import OrdersSettings
from shared import SettingsError, serve


def main() -> None:
    """Check the settings first, so a bad variable stops start-up with its name."""
    try:
        settings = OrdersSettings.from_env(os.environ)
    except SettingsError as exc:
        raise SystemExit(f"orders: {exc}") from None
    serve(
        "services.orders.app:app_from_env",
        service="orders",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
