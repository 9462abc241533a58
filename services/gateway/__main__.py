"""Run the gateway service: ``python -m services.gateway``."""

from __future__ import annotations

from services.gateway.settings import GatewaySettings
from shared.runtime import serve_from_env

if __name__ == "__main__":
    serve_from_env("services.gateway.app:app_from_env", service="gateway", load=GatewaySettings.from_env)
