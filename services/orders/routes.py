"""HTTP mapping for orders: verify the token, apply a domain rule, call the store, answer JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.orders import domain, paging
from services.orders.openapi import build_openapi
from services.orders.ratelimit import RateLimiter, retry_after_seconds
from services.orders.store import OrderStore
from shared.core import AccessClaims, NotFound, TooManyRequests, query_as
from shared.web import TokenVerifier, Tracing, openapi_route, read_json_object

# msgspec encodes the order structs directly, several times faster than json.dumps of dicts.
_encode = msgspec.json.Encoder().encode


async def _authenticate(request: Request) -> AccessClaims:
    verifier: TokenVerifier = request.state.verifier
    tracing: Tracing = request.state.tracing
    with tracing.span("verify token", {"auth.audience": verifier.policy.audience}):
        return await verifier.verify_request(request)


def _store(request: Request) -> OrderStore:
    store: OrderStore = request.state.store
    return store


def _private_json(content: Any, status_code: int = 200) -> Response:
    # Per-user data: no cache between here and the client may keep a copy.
    return Response(
        _encode(content),
        status_code=status_code,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def whoami(request: Request) -> Response:
    """``GET /whoami``: who the token says the caller is. Verification and nothing else."""
    claims = await _authenticate(request)
    return _private_json(domain.Identity(sub=claims.sub, role=claims.role))


async def list_orders(request: Request) -> Response:
    """``GET /orders``: a page of the caller's orders, newest first; ``?all=true``: everyone's (admins)."""
    claims = await _authenticate(request)
    query = query_as(request.query_params, paging.ListingQuery)
    owner = domain.listing_owner(claims, query.all_users)
    store = _store(request)
    scope = paging.listing_scope(owner)
    page = paging.page_request(query, key=store.cursor_key, scope=scope)
    # One row more than the page says whether there is a next page without a second query.
    orders = store.page(owner, limit=page.limit + 1, after=page.after)
    last = None
    if len(orders) > page.limit:
        del orders[page.limit :]
        last = paging.Position(created_at=orders[-1].created_at, order_id=orders[-1].id)
    link = paging.next_link(
        last, key=store.cursor_key, scope=scope, limit=page.limit, want_all=query.all_users
    )
    return _private_json(paging.OrderPage(orders=orders, next=link))


async def create_order(request: Request) -> Response:
    """``POST /orders`` ``{"item", "quantity"}``: 201 with the new order, owned by the token's ``sub``."""
    claims = await _authenticate(request)
    limiter: RateLimiter = request.state.creation_limiter
    wait = limiter.acquire(claims.sub)
    if wait:
        raise TooManyRequests(
            f"at most {limiter.burst} orders at once and {limiter.rate:g} a second after that",
            retry_after=retry_after_seconds(wait),
        )
    draft = domain.parse_order_draft(await read_json_object(request))
    order = domain.place_order(draft, owner=claims.sub, order_id=domain.new_order_id(), now=datetime.now(UTC))
    max_orders: int = request.state.max_orders_per_user
    if not await _store(request).add(order, max_per_owner=max_orders):
        raise domain.quota_exceeded(max_orders)
    return _private_json(order.to_document(), status_code=201)


async def get_order(request: Request) -> Response:
    """``GET /orders/{order_id}``: one of the caller's orders; anything else is 404."""
    claims = await _authenticate(request)
    order_id: str = request.path_params["order_id"]
    if not domain.is_order_id(order_id):
        raise NotFound("no such order")
    order = _store(request).get(order_id)
    return _private_json(domain.readable_order(order, claims))


routes = [
    Route("/whoami", whoami, methods=["GET"]),
    Route("/orders", list_orders, methods=["GET"]),
    Route("/orders", create_order, methods=["POST"]),
    Route("/orders/{order_id}", get_order, methods=["GET"]),
    openapi_route(build_openapi),
]
