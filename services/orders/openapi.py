"""The OpenAPI description of orders as served on its own port: paths as the service mounts them.

The request schema restates :func:`services.orders.domain.parse_order_draft` with the domain's
own limits; the characters its ``item`` pattern refuses derive from the domain's categories.
The gateway publishes the same operations under ``/api`` (see :mod:`services.gateway.openapi`).
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Any

from services.orders.domain import (
    INVISIBLE_CHARACTERS,
    ITEM_MAX_LENGTH,
    REJECTED_CATEGORIES,
    Identity,
    OrderDocument,
    OrderDraft,
)
from services.orders.paging import ListingQuery, OrderPage
from services.orders.settings import DEFAULT_CREATE_BURST, DEFAULT_CREATE_RATE, DEFAULT_MAX_ORDERS_PER_USER
from shared.core import query_parameters, schema_components, schema_ref
from shared.web import openapi_document, openapi_error

SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An RS256 `at+jwt` access token from auth's `POST /token` with audience `orders`.",
    }
}


@functools.cache
def _refused_ranges() -> str:
    """The characters the domain refuses in text, as a regex class body of ``\\uXXXX`` ranges.

    Only the Basic Multilingual Plane: ``\\uXXXX`` reads the same in every regex dialect a client
    may use, and the few refused characters beyond it are refused by the service all the same.
    """
    refused = [
        code
        for code in range(0x10000)
        if not 0xD800 <= code <= 0xDFFF
        and (unicodedata.category(chr(code)) in REJECTED_CATEGORIES or chr(code) in INVISIBLE_CHARACTERS)
    ]
    ranges: list[list[int]] = []
    for code in refused:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}" for low, high in ranges)


def _item_schema() -> dict[str, Any]:
    text = f"[^{_refused_ranges()}]"
    return {
        "type": "string",
        # What the domain accepts: no control, format (invisible, bidirectional), separator or
        # private-use characters, and at least one character that trimming keeps. Stricter than
        # the service in two ways: the length counts outer spaces, and U+200D is refused even
        # between two emoji.
        "pattern": f"^{text}*[^\\s{_refused_ranges()}]{text}*$",
        "maxLength": ITEM_MAX_LENGTH,
    }


def _schemas() -> dict[str, Any]:
    # Derived from the types the routes decode and encode (shared.core.api), then the one rule only
    # code can check, the item's characters, added as a pattern derived from the same categories.
    schemas = schema_components(OrderDraft, OrderDocument, OrderPage, Identity)
    schemas["OrderDraft"]["properties"]["item"].update(_item_schema())
    return schemas


def __getattr__(name: str) -> Any:
    # SCHEMAS is built on first use, not at import: deriving the item pattern walks Unicode.
    if name == "SCHEMAS":
        return _schemas()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_TOKEN_ERRORS = {
    "401": {
        **openapi_error("No token, or `invalid_token`: bad signature, wrong audience, expired."),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "431": openapi_error("The request headers are too large."),
    "503": openapi_error("The signing keys could not be fetched yet."),
}


def _json(schema: type[Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema_ref(schema)}},
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
                "responses": {"200": _json(Identity, "The token's subject and role."), **_TOKEN_ERRORS},
            }
        },
        "/orders": {
            "get": {
                "operationId": "list_orders",
                "summary": "The caller's orders, newest first; `all=true` lists everyone's, for admins.",
                "tags": ["orders"],
                "security": _BEARER,
                "parameters": query_parameters(ListingQuery),
                "responses": {
                    "200": _json(OrderPage, "One page of orders and the link to the next."),
                    "403": openapi_error("`all=true` from a caller who is not an admin."),
                    "422": openapi_error(
                        "`all`, `limit` or `cursor` is malformed, out of range, repeated, or (a cursor)"
                        " not one this listing gave out; the detail names the parameter."
                    ),
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
                    "content": {"application/json": {"schema": schema_ref(OrderDraft)}},
                },
                "responses": {
                    "201": _json(OrderDocument, "The new order."),
                    "409": openapi_error(
                        f"`order_quota_exceeded`: the caller already holds the most orders one user may"
                        f" (`ORDERS_MAX_PER_USER`, {DEFAULT_MAX_ORDERS_PER_USER} by default)."
                    ),
                    "429": {
                        **openapi_error(
                            f"Too many orders too fast: {DEFAULT_CREATE_BURST} at once, then"
                            f" {DEFAULT_CREATE_RATE:g} a second per user and worker process by default"
                            " (`ORDERS_CREATE_BURST`, `ORDERS_CREATE_RATE`)."
                        ),
                        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                    },
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
                    "200": _json(OrderDocument, "The order."),
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
        schemas=_schemas(),
        security_schemes=SECURITY_SCHEMES,
    )
