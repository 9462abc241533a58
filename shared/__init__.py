"""What every service needs and nothing more, in three floors that import only downward.

* :mod:`shared.core`: errors, token rules, settings, logging; the standard library only.
  Domain modules import this floor and nothing else.
* :mod:`shared.web`: the app defaults (middleware, error rendering, health, metrics, OpenAPI)
  and the token verifier with its JWKS cache.
* :mod:`shared.runtime`: running a service under uvicorn with the project's protocol and workers.

Import from the floor you need; this package itself exports nothing, so importing a domain
module never loads a floor it does not use.
"""

from __future__ import annotations

__all__: list[str] = []
