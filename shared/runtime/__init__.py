"""The top floor: the process that runs a service, uvicorn with the project's protocol and workers.

Only a service's ``__main__`` needs it; nothing below imports it.
"""

from __future__ import annotations

from shared.runtime.serve import serve, serve_from_env

__all__ = ["serve", "serve_from_env"]
