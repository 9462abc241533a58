"""Run the orders service: ``python -m services.orders``."""

from __future__ import annotations

from services.orders.settings import OrdersSettings
from shared.runtime import serve_from_env

if __name__ == "__main__":
    serve_from_env("services.orders.app:app_from_env", service="orders", load=OrdersSettings.from_env)
