"""invoices: a resource service that trusts the gateway's tokens and verifies them again itself."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.core import env_int, env_str, schema_components, schema_ref, validate_as
from shared.web import (
    EdgeSettings,
    TokenVerifier,
    VerifierSettings,
    build_app,
    open_verifier,
    openapi_document,
    openapi_error,
    openapi_route,
    read_json_object,
)

AUDIENCE = "invoices"


@dataclass(frozen=True)
class InvoicesSettings:
    """Where it listens, and the shared verifier variables (``JWKS_URL``, ``TOKEN_ISSUER``...)."""

    host: str
    port: int
    log_level: str
    verifier: VerifierSettings
    edge: EdgeSettings
    workers: int = 1  # the invoices live in this process's memory: one process holds them all

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> InvoicesSettings:
        return cls(
            host=env_str(environ, "INVOICES_HOST", "127.0.0.1"),
            port=env_int(environ, "INVOICES_PORT", 8003, minimum=1, maximum=65535),
            log_level=env_str(environ, "LOG_LEVEL", "info"),
            verifier=VerifierSettings.from_env(environ),
            edge=EdgeSettings.from_env(environ),
        )


class InvoiceDraft(msgspec.Struct, forbid_unknown_fields=True):
    amount_cents: Annotated[int, msgspec.Meta(ge=1, le=10**9)]


async def invoices(request: Request) -> JSONResponse:
    """``GET /invoices``: the caller's invoices; ``POST`` ``{"amount_cents"}``: a new one, 201."""
    verifier: TokenVerifier = request.state.verifier
    claims = await verifier.verify_request(request)
    mine: list[dict[str, Any]] = request.state.invoices[claims.sub]
    if request.method == "GET":
        return JSONResponse({"invoices": mine}, headers={"Cache-Control": "no-store"})
    draft = validate_as(await read_json_object(request), InvoiceDraft)
    mine.append({"id": len(mine) + 1, "amount_cents": draft.amount_cents})
    return JSONResponse(mine[-1], status_code=201, headers={"Cache-Control": "no-store"})


def describe() -> dict[str, Any]:
    """What the gateway merges into its own ``/openapi.json``, under ``/api/invoices``."""
    body = {"required": True, "content": {"application/json": {"schema": schema_ref(InvoiceDraft)}}}
    answers = {"200": {"description": "the caller's invoices"}, "401": openapi_error("no valid token")}
    created = {"201": {"description": "the new invoice"}, "422": openapi_error("a field is wrong")}
    item = {"get": {"responses": answers}, "post": {"requestBody": body, "responses": created}}
    return openapi_document(
        title="invoices", description="", paths={"/invoices": item}, schemas=schema_components(InvoiceDraft)
    )


def create_app(settings: InvoicesSettings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with open_verifier(settings.verifier, AUDIENCE) as verifier:
            yield {"verifier": verifier, "invoices": defaultdict(list)}

    async def readiness(request: Request) -> dict[str, Any]:
        return {"jwks": request.state.verifier.status()}

    routes = [Route("/invoices", invoices, methods=["GET", "POST"]), openapi_route(describe)]
    return build_app(routes, lifespan=lifespan, readiness=readiness, edge=settings.edge)


def app_from_env() -> Starlette:
    return create_app(InvoicesSettings.from_env(os.environ))
