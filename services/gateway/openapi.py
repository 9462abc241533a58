"""The gateway's OpenAPI description: the public API, as clients on the public origin see it.

Built from the documents the upstreams serve at their own ``/openapi.json`` (see
:mod:`services.gateway.descriptions`), never from their code: each upstream operation appears at the
public path the route table maps it to (``/login`` on auth is ``/auth/login`` here), internal paths
never appear, and the gateway adds its own routes and the errors it answers for an upstream. Pure:
documents in, document out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from services.gateway.domain import ROUTE_TABLE, Route, is_internal, upstream_names
from shared.web import openapi_document, openapi_error
from shared.web.openapi import OPENAPI_MEDIA_TYPE

#: The extension naming the upstreams whose operations a document leaves out for now.
UNAVAILABLE = "x-unavailable-upstreams"


class DescriptionConflict(ValueError):
    """Two upstream descriptions define one schema, security scheme or public path differently."""


class MalformedDescription(ValueError):
    """An upstream served something that is not an OpenAPI document the gateway can merge."""


_GATEWAY_ERRORS = {
    "400": openapi_error("`invalid_path` or `invalid_query`: the request cannot be forwarded as sent."),
    "408": openapi_error("The request body did not arrive in time."),
    "413": openapi_error("The body is too large."),
    "502": openapi_error("The upstream service is unreachable."),
    "503": openapi_error("The upstream service is unavailable."),
    "504": openapi_error("The upstream service did not answer in time."),
}

_OWN_PATHS: dict[str, Any] = {
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This description, built from the ones the upstreams serve.",
            "tags": ["operations"],
            "responses": {
                "200": {
                    "description": (
                        "The OpenAPI 3.1 description of the public API. While an upstream's own "
                        f"description cannot be fetched, its operations are left out and `{UNAVAILABLE}` "
                        "names it."
                    ),
                    "content": {OPENAPI_MEDIA_TYPE: {"schema": {"type": "object"}}},
                },
                "502": openapi_error("`description_conflict`: two upstreams define one name differently."),
            },
        }
    },
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
        if isinstance(operation, dict) and isinstance(operation.get("responses"), dict):
            operation["responses"] = {**_GATEWAY_ERRORS, **operation["responses"]}
    return item


def checked(document: object) -> dict[str, Any]:
    """``document`` if it has the shape the merge reads; :class:`MalformedDescription` if not."""
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise MalformedDescription("not an OpenAPI document with paths")
    components = document.get("components", {})
    if not isinstance(components, dict):
        raise MalformedDescription("components is not an object")
    for section in ("schemas", "securitySchemes"):
        if not isinstance(components.get(section, {}), dict):
            raise MalformedDescription(f"components.{section} is not an object")
    for path, item in document["paths"].items():
        if not path.startswith("/") or not isinstance(item, dict):
            raise MalformedDescription(f"the path item {path!r} is malformed")
    return document


def _merge(
    into: dict[str, Any], owners: dict[str, str], upstream: str, part: Mapping[str, Any], what: str
) -> None:
    # The same definition from two upstreams (the shared Error schema) is one definition; two
    # different ones under one name would make one upstream's references mean the other's shape.
    for name, definition in part.items():
        if name in into and into[name] != definition:
            raise DescriptionConflict(f"{owners[name]} and {upstream} define the {what} {name!r} differently")
        into[name] = definition
        owners.setdefault(name, upstream)


def _route_summary(route: Route) -> str:
    if route.audience is None:
        return f"`{route.prefix}/*` goes to {route.upstream} with cookies."
    return (
        f"`{route.prefix}/*` goes to {route.upstream} after the gateway verifies a bearer token "
        f"for `{route.audience}` itself."
    )


def public_document(
    described: Mapping[str, Mapping[str, Any] | None], table: Sequence[Route] = ROUTE_TABLE
) -> dict[str, Any]:
    """The whole public description, as served at ``GET /openapi.json`` on the gateway.

    ``described`` holds, per upstream name of ``table``, the document it serves (checked with
    :func:`checked`), or None when it could not be had: that upstream's operations are left out
    and the document names it under :data:`UNAVAILABLE`. Raises :class:`DescriptionConflict` when
    two upstreams define one component name differently or publish the same public path.
    """
    published: dict[str, Any] = {}
    path_owners: dict[str, str] = {}
    components: dict[str, dict[str, Any]] = {"schemas": {}, "securitySchemes": {}}
    owners: dict[str, dict[str, str]] = {"schemas": {}, "securitySchemes": {}}
    unavailable: list[str] = []
    for upstream in upstream_names(table):
        document = described.get(upstream)
        if document is None:
            unavailable.append(upstream)
            continue
        for upstream_path, item in document["paths"].items():
            public = _public_path(upstream, upstream_path, table)
            if public is None:
                continue
            if public in published:
                raise DescriptionConflict(f"{path_owners[public]} and {upstream} both publish {public}")
            published[public] = _proxied(item)
            path_owners[public] = upstream
        for section, merged in components.items():
            _merge(
                merged, owners[section], upstream, document.get("components", {}).get(section, {}), section
            )
    description = "The one public origin. " + " ".join(_route_summary(route) for route in table)
    if unavailable:
        description += (
            f" Left out for now, as their own descriptions could not be fetched: {', '.join(unavailable)}."
        )
    result = openapi_document(
        title="hybrid-auth gateway",
        description=description,
        paths={**published, **_OWN_PATHS},
        schemas=components["schemas"],
        security_schemes=components["securitySchemes"],
    )
    if unavailable:
        result[UNAVAILABLE] = unavailable
    return result
