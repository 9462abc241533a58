"""The OpenAPI description of orders as served on its own port: paths as the service mounts them.

The request schema restates :func:`services.orders.domain.parse_order_draft` with the domain's
own limits. The gateway publishes the same operations under ``/api`` (see
:mod:`services.gateway.openapi`).
"""

from __future__ import annotations

from typing import Any

from services.orders.domain import ITEM_MAX_LENGTH, QUANTITY_MAX, QUANTITY_MIN
from shared import openapi_document, openapi_error

SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An RS256 `at+jwt` access token from auth's `POST /token` with audience `orders`.",
    }
}

ORDER_ID_PATTERN = "^[0-9a-f]{32}$"
_TEXT = "[^\\x00-\\x1f\\x7f-\\x9f]"

SCHEMAS: dict[str, Any] = {
    "OrderDraft": {
        "type": "object",
        "required": ["item", "quantity"],
        "additionalProperties": False,
        "properties": {
            "item": {
                "type": "string",
                # What the domain accepts: no C0/C1 controls, and at least one character that
                # trimming keeps; the schema's length limit is stricter as it counts outer spaces.
                "pattern": f"^{_TEXT}*[^\\s\\x00-\\x1f\\x7f-\\x9f]{_TEXT}*$",
                "maxLength": ITEM_MAX_LENGTH,
                "description": f"1 to {ITEM_MAX_LENGTH} characters after trimming; no control characters.",
            },
            "quantity": {"type": "integer", "minimum": QUANTITY_MIN, "maximum": QUANTITY_MAX},
        },
    },
    "Order": {
        "type": "object",
        "required": ["id", "item", "quantity", "owner", "created_at"],
        "properties": {
            "id": {"type": "string", "pattern": ORDER_ID_PATTERN},
            "item": {"type": "string"},
            "quantity": {"type": "integer"},
            "owner": {"type": "string", "description": "The `sub` of the token that placed it."},
            "created_at": {"type": "string", "description": "UTC, `2025-01-31T12:00:00.000000Z`."},
        },
    },
    "OrderList": {
        "type": "object",
        "required": ["orders"],
        "properties": {"orders": {"type": "array", "items": {"$ref": "#/components/schemas/Order"}}},
    },
    "Identity": {
        "type": "object",
        "required": ["sub", "role"],
        "properties": {"sub": {"type": "string"}, "role": {"type": "string"}},
    },
}

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_TOKEN_ERRORS = {
    "401": {
        **openapi_error("No token, or `invalid_token`: bad signature, wrong audience, expired."),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "431": openapi_error("The request headers are too large."),
    "503": openapi_error("The signing keys could not be fetched yet."),
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def paths() -> dict[str, Any]:
    """Every orders operation, keyed by the path orders mounts it at."""
    return {
        "/whoami": {
            "get": {
                "operationId": "whoami",
                "summary": "Who the token says the caller is.",
                "tags": ["orders"],
                "security": _BEARER,
                "responses": {"200": _json("Identity", "The token's subject and role."), **_TOKEN_ERRORS},
            }
        },
        "/orders": {
            "get": {
                "operationId": "list_orders",
                "summary": "The caller's orders, newest first; `all=true` lists everyone's, for admins.",
                "tags": ["orders"],
                "security": _BEARER,
                "parameters": [
                    {"name": "all", "in": "query", "required": False, "schema": {"enum": ["true", "false"]}}
                ],
                "responses": {
                    "200": _json("OrderList", "The orders."),
                    "403": openapi_error("`all=true` from a caller who is not an admin."),
                    "422": openapi_error("`all` is not `true` or `false`, or is repeated."),
                    **_TOKEN_ERRORS,
                },
            },
            "post": {
                "operationId": "create_order",
                "summary": "Place an order owned by the token's subject.",
                "tags": ["orders"],
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OrderDraft"}}},
                },
                "responses": {
                    "201": _json("Order", "The new order."),
                    "400": openapi_error("The body is not a JSON object, or its framing is wrong."),
                    "413": openapi_error("The body is too large."),
                    "415": openapi_error("The body is not `application/json`."),
                    "422": openapi_error("A field is missing, unknown or out of range; `field` names it."),
                    **_TOKEN_ERRORS,
                },
            },
        },
        "/orders/{order_id}": {
            "get": {
                "operationId": "get_order",
                "summary": "One of the caller's orders.",
                "tags": ["orders"],
                "security": _BEARER,
                "parameters": [
                    {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("Order", "The order."),
                    "404": openapi_error("No such order, or not the caller's."),
                    **_TOKEN_ERRORS,
                },
            }
        },
    }


def build_openapi() -> dict[str, Any]:
    """The whole description, as served at ``GET /openapi.json``."""
    return openapi_document(
        title="orders",
        description="Orders, each owned by the subject of the access token that placed it.",
        paths=paths(),
        schemas=SCHEMAS,
        security_schemes=SECURITY_SCHEMES,
    )
