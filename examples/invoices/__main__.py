"""Run the invoices example: ``python -m examples.invoices``."""

from __future__ import annotations

from examples.invoices.app import InvoicesSettings
from shared.runtime import serve_from_env

if __name__ == "__main__":
    serve_from_env("examples.invoices.app:app_from_env", service="invoices", load=InvoicesSettings.from_env)
