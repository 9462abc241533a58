"""HTTP mapping for orders: verify the token, apply a domain rule, call the store, answer JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.orders import domain
from services.orders.openapi import build_openapi
from services.orders.store import OrderStore
from shared import AccessClaims, NotFound, TokenVerifier, openapi_route, read_json_object


async def _authenticate(request: Request) -> AccessClaims:
    verifier: TokenVerifier = request.state.verifier
    return await verifier.verify_request(request)


def _store(request: Request) -> OrderStore:
    store: OrderStore = request.state.store
    return store


def _private_json(content: Any, status_code: int = 200) -> JSONResponse:
    # Per-user data: no cache between here and the client may keep a copy.
    return JSONResponse(content, status_code=status_code, headers={"Cache-Control": "no-store"})


async def whoami(request: Request) -> Response:
    """``GET /whoami``: who the token says the caller is. Verification and nothing else."""
    claims = await _authenticate(request)
    return _private_json({"sub": claims.sub, "role": claims.role})


async def list_orders(request: Request) -> Response:
    """``GET /orders``: the caller's orders newest first; ``?all=true`` is everyone's, for admins."""
    claims = await _authenticate(request)
    want_all = domain.parse_all_flag(request.query_params.getlist("all"))
    orders = await _store(request).list_orders(domain.listing_owner(claims, want_all))
    return _private_json({"orders": [order.to_document() for order in orders]})


async def create_order(request: Request) -> Response:
    """``POST /orders`` ``{"item", "quantity"}``: 201 with the new order, owned by the token's ``sub``."""
    claims = await _authenticate(request)
    draft = domain.parse_order_draft(await read_json_object(request))
    order = domain.place_order(draft, owner=claims.sub, order_id=domain.new_order_id(), now=datetime.now(UTC))
    await _store(request).add(order)
    return _private_json(order.to_document(), status_code=201)


async def get_order(request: Request) -> Response:
    """``GET /orders/{order_id}``: one of the caller's orders; anything else is 404."""
    claims = await _authenticate(request)
    order_id: str = request.path_params["order_id"]
    if not domain.is_order_id(order_id):
        raise NotFound("no such order")
    order = await _store(request).get(order_id)
    return _private_json(domain.readable_order(order, claims).to_document())


routes = [
    Route("/whoami", whoami, methods=["GET"]),
    Route("/orders", list_orders, methods=["GET"]),
    Route("/orders", create_order, methods=["POST"]),
    Route("/orders/{order_id}", get_order, methods=["GET"]),
    openapi_route(build_openapi),
]
