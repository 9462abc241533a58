"""The ground floor: errors, token rules, declared types, settings and logging.

Imports only the standard library and msgspec (a pure data library with no I/O), so a domain
module that imports only this floor stays pure: no web framework, no HTTP client and no server
is loaded with it.
"""

from __future__ import annotations

from shared.core.api import (
    InvalidField,
    query_as,
    query_parameters,
    schema_components,
    schema_ref,
    validate_as,
)
from shared.core.errors import (
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
)
from shared.core.logs import configure_logging, request_id, trace_id
from shared.core.proxies import ProxyNetwork, client_ip, parse_trusted_proxies, trusted_proxies_from_env
from shared.core.settings import (
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
from shared.core.tokens import ALGORITHM, TOKEN_TYPE, AccessClaims, TokenPolicy, loads_strict

# Plain sorted(), as tests/unit/test_shared_api.py checks; ruff would put the constants first.
__all__ = [  # noqa: RUF022
    "ALGORITHM",
    "AccessClaims",
    "ApiError",
    "BadGateway",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "GatewayTimeout",
    "HeadersTooLarge",
    "InvalidField",
    "InvalidToken",
    "NotFound",
    "PayloadTooLarge",
    "ProxyNetwork",
    "RequestTimeout",
    "Secret",
    "ServiceUnavailable",
    "SettingsError",
    "TOKEN_TYPE",
    "TokenPolicy",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
    "client_ip",
    "configure_logging",
    "env_bool",
    "env_environment",
    "env_float",
    "env_int",
    "env_list",
    "env_secret",
    "env_str",
    "loads_strict",
    "parse_trusted_proxies",
    "query_as",
    "query_parameters",
    "request_id",
    "schema_components",
    "schema_ref",
    "trace_id",
    "trusted_proxies_from_env",
    "validate_as",
]
