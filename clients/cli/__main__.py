"""Run the command-line client: ``python -m clients.cli COMMAND``."""

from __future__ import annotations

import sys

from clients.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
