"""What every service needs and nothing more: verification, errors, edge limits, logs, health, metrics."""

from __future__ import annotations

from shared.api import InvalidField, query_as, query_parameters, schema_components, schema_ref, validate_as
from shared.edge import EdgeSettings
from shared.errors import (
    ApiError,
    BadGateway,
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    HeadersTooLarge,
    InvalidToken,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    error_response,
)
from shared.jwks import MIN_RSA_BITS, JWKSCache, JWKSConfig, JWKSFetchError, parse_jwks
from shared.logs import configure_logging, request_id
from shared.metrics import VerifierMetrics, metrics_route, new_registry
from shared.openapi import openapi_document, openapi_error, openapi_route
from shared.periodic import Periodic, cancel_and_wait
from shared.proxies import ProxyNetwork, client_ip, parse_trusted_proxies, trusted_proxies_from_env
from shared.service import build_app, read_json_object, serve, serve_from_env
from shared.settings import (
    Secret,
    SettingsError,
    env_bool,
    env_environment,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
)
from shared.tokens import ALGORITHM, TOKEN_TYPE, AccessClaims, TokenPolicy, loads_strict
from shared.verifier import TokenVerifier, VerifierSettings, bearer_token, open_verifier

# Plain sorted(), as tests/unit/test_shared_api.py checks; ruff would put the constants first.
__all__ = [  # noqa: RUF022
    "ALGORITHM",
    "AccessClaims",
    "ApiError",
    "BadGateway",
    "BadRequest",
    "Conflict",
    "EdgeSettings",
    "Forbidden",
    "GatewayTimeout",
    "HeadersTooLarge",
    "InvalidField",
    "InvalidToken",
    "JWKSCache",
    "JWKSConfig",
    "JWKSFetchError",
    "MIN_RSA_BITS",
    "NotFound",
    "PayloadTooLarge",
    "Periodic",
    "ProxyNetwork",
    "RequestTimeout",
    "Secret",
    "ServiceUnavailable",
    "SettingsError",
    "TOKEN_TYPE",
    "TokenPolicy",
    "TokenVerifier",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
    "VerifierMetrics",
    "VerifierSettings",
    "bearer_token",
    "build_app",
    "cancel_and_wait",
    "client_ip",
    "configure_logging",
    "env_bool",
    "env_environment",
    "env_float",
    "env_int",
    "env_list",
    "env_secret",
    "env_str",
    "error_response",
    "loads_strict",
    "metrics_route",
    "new_registry",
    "open_verifier",
    "openapi_document",
    "openapi_error",
    "openapi_route",
    "parse_jwks",
    "parse_trusted_proxies",
    "query_as",
    "query_parameters",
    "read_json_object",
    "request_id",
    "schema_components",
    "schema_ref",
    "serve",
    "serve_from_env",
    "trusted_proxies_from_env",
    "validate_as",
]
