"""The gateway's OpenAPI description: the public API, as clients on the public origin see it.

Derived rather than restated: each upstream operation appears at the public path the route
table maps it to (``/login`` on auth is ``/auth/login`` here), internal paths never appear,
and the gateway adds its own routes and the errors it answers for an upstream. The upstream
descriptions stay on the upstreams' private ports; this one is the public one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from services.auth import openapi as auth_openapi
from services.gateway.domain import ROUTE_TABLE, Route, is_internal
from services.orders import openapi as orders_openapi
from shared.web import openapi_document, openapi_error

_GATEWAY_ERRORS = {
    "400": openapi_error("`invalid_path` or `invalid_query`: the request cannot be forwarded as sent."),
    "408": openapi_error("The request body did not arrive in time."),
    "413": openapi_error("The body is too large."),
    "502": openapi_error("The upstream service is unreachable."),
    "503": openapi_error("The upstream service is unavailable."),
    "504": openapi_error("The upstream service did not answer in time."),
}

_OWN_PATHS: dict[str, Any] = {
    "/": {
        "get": {
            "operationId": "demo_page",
            "summary": "The demo page: log in, mint a token, manage orders and sessions.",
            "tags": ["demo"],
            "responses": {"200": {"description": "The page.", "content": {"text/html": {"schema": {}}}}},
        }
    },
    "/static/{name}": {
        "get": {
            "operationId": "static_asset",
            "summary": "The demo page's scripts and styles.",
            "tags": ["demo"],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    "description": "The asset; its media type follows the file's extension.",
                    "content": {"*/*": {"schema": {}}},
                },
                "404": openapi_error("No such asset."),
            },
        }
    },
}


def _public_path(upstream: str, upstream_path: str, table: Sequence[Route]) -> str | None:
    """Where ``upstream_path`` of ``upstream`` is published: under the route with the longest
    matching upstream prefix (``/.well-known/jwks.json``, not ``/auth/.well-known/jwks.json``)."""
    candidates = [
        route
        for route in table
        if route.upstream == upstream
        and (
            route.upstream_prefix == ""
            or upstream_path == route.upstream_prefix
            or upstream_path.startswith(route.upstream_prefix + "/")
        )
    ]
    if not candidates or is_internal(upstream_path):
        return None
    route = max(candidates, key=lambda candidate: len(candidate.upstream_prefix))
    return route.prefix + upstream_path[len(route.upstream_prefix) :]


def _proxied(operations: Mapping[str, Any]) -> dict[str, Any]:
    """An upstream path item with the errors the gateway itself may answer added to each operation."""
    item = copy.deepcopy(dict(operations))
    for operation in item.values():
        operation["responses"] = {**_GATEWAY_ERRORS, **operation["responses"]}
    return item


def _merged(*parts: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        clash = sorted(set(merged) & set(part))
        if clash:
            raise ValueError(f"two upstream descriptions both define {clash[0]}")
        merged.update(part)
    return merged


def paths(table: Sequence[Route] = ROUTE_TABLE) -> dict[str, Any]:
    """The gateway's own routes and every upstream operation it forwards, at its public path."""
    upstream_paths = {"auth": auth_openapi.paths(), "orders": orders_openapi.paths()}
    published: dict[str, Any] = dict(_OWN_PATHS)
    for upstream, described in upstream_paths.items():
        for upstream_path, item in described.items():
            public = _public_path(upstream, upstream_path, table)
            if public is not None:
                published[public] = _proxied(item)
    return published


def build_openapi() -> dict[str, Any]:
    """The whole public description, as served at ``GET /openapi.json`` on the gateway."""
    return openapi_document(
        title="hybrid-auth gateway",
        description=(
            "The one public origin. `/auth/*` and `/.well-known/*` go to auth with cookies; "
            "`/api/orders*` goes to orders after the gateway verifies the bearer token itself."
        ),
        paths=paths(),
        schemas=_merged(auth_openapi.SCHEMAS, orders_openapi.SCHEMAS),
        security_schemes=_merged(auth_openapi.SECURITY_SCHEMES, orders_openapi.SECURITY_SCHEMES),
    )
