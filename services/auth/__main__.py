"""Entry point: ``python -m services.auth``."""

from __future__ import annotations

import sys

from services.auth.cli import main

if __name__ == "__main__":
    sys.exit(main())
