"""OpenAPI 3.1 descriptions: the pieces every service's description shares, and the route serving one.

Each service keeps its description as reviewable data in ``services/<name>/openapi.py``; this
module adds what they all have in common (the error schema every 4xx/5xx answers with) and
serves the document at ``GET /openapi.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

OPENAPI_VERSION = "3.1.0"
#: The media type the OpenAPI Initiative registered for a JSON description; ``+json`` keeps
#: every generic JSON client able to read it.
OPENAPI_MEDIA_TYPE = "application/vnd.oai.openapi+json;version=3.1"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The one error shape of every service; extra members may follow.",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "minLength": 1, "description": "A short machine-readable code."},
        "detail": {"type": "string", "minLength": 1, "description": "What went wrong, for people."},
    },
}


def _json_content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def _service_paths() -> dict[str, Any]:
    """The routes :func:`shared.build_app` and :func:`openapi_route` give every service."""
    ready = {"type": "object", "required": ["status", "checks"], "properties": {"checks": {"type": "object"}}}
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process answers.",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "Alive.",
                        "content": _json_content({"type": "object", "required": ["status"]}),
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the service's dependencies answer.",
                "tags": ["operations"],
                "responses": {
                    "200": {"description": "Ready.", "content": _json_content(ready)},
                    "503": openapi_error("A dependency is not ready; `checks` says which."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics of this process: key cache, verdicts, requests.",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This description.",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 description of this service.",
                        "content": {OPENAPI_MEDIA_TYPE: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def openapi_error(description: str) -> dict[str, Any]:
    """A response object for an error status: the shared ``{"error", "detail"}`` JSON body."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_document(
    *,
    title: str,
    description: str,
    paths: Mapping[str, Any],
    schemas: Mapping[str, Any] | None = None,
    security_schemes: Mapping[str, Any] | None = None,
    version: str = "1.0.0",
) -> dict[str, Any]:
    """A complete OpenAPI 3.1 document: ``paths``, the shared ``Error`` schema, and the routes every
    service has (``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``)."""
    components: dict[str, Any] = {"schemas": {"Error": _ERROR_SCHEMA, **(schemas or {})}}
    if security_schemes:
        components["securitySchemes"] = dict(security_schemes)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": {**_service_paths(), **paths},
        "components": components,
    }


def openapi_route(build: Callable[[], Mapping[str, Any]]) -> Route:
    """``GET /openapi.json`` serving the document ``build`` returns, rendered once on first use."""
    rendered: list[bytes] = []

    async def openapi_json(request: Request) -> Response:
        if not rendered:
            rendered.append(json.dumps(build(), separators=(",", ":")).encode())
        return Response(rendered[0], media_type=OPENAPI_MEDIA_TYPE)

    return Route("/openapi.json", openapi_json, methods=["GET"])
