"""The first floor: what every service's HTTP side shares, on Starlette, httpx and joserfc.

The app defaults (edge limits, middleware, error rendering, health, metrics, OpenAPI), the
token verifier with its JWKS cache and revocation feed, and the background-loop helper.
Imports the core floor, never the runtime above it.
"""

from __future__ import annotations

from shared.web.app import build_app, read_json_object
from shared.web.edge import EdgeSettings
from shared.web.jwks import MIN_RSA_BITS, JWKSCache, JWKSConfig, JWKSFetchError, parse_jwks
from shared.web.metrics import VerifierMetrics, metrics_route, new_registry
from shared.web.openapi import openapi_document, openapi_error, openapi_route
from shared.web.periodic import Periodic, cancel_and_wait
from shared.web.responses import error_response
from shared.web.revocations import RevocationCache, RevocationConfig, RevocationFeedError
from shared.web.verifier import TokenVerifier, VerifierSettings, bearer_token, open_verifier

# Plain sorted(), as tests/unit/test_shared_api.py checks; ruff would put the constants first.
__all__ = [  # noqa: RUF022
    "EdgeSettings",
    "JWKSCache",
    "JWKSConfig",
    "JWKSFetchError",
    "MIN_RSA_BITS",
    "Periodic",
    "RevocationCache",
    "RevocationConfig",
    "RevocationFeedError",
    "TokenVerifier",
    "VerifierMetrics",
    "VerifierSettings",
    "bearer_token",
    "build_app",
    "cancel_and_wait",
    "error_response",
    "metrics_route",
    "new_registry",
    "open_verifier",
    "openapi_document",
    "openapi_error",
    "openapi_route",
    "parse_jwks",
    "read_json_object",
]
