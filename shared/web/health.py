"""Liveness and readiness routes with the same shape in every service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.web.responses import error_response

#: A readiness check gets the request (for ``request.state``) and returns named results;
#: each value is a bool or a dict with a boolean ``ready`` member.
ReadinessCheck = Callable[[Request], Awaitable[dict[str, Any]]]


def _is_ready(result: Any) -> bool:
    return bool(result.get("ready")) if isinstance(result, dict) else bool(result)


def health_routes(check: ReadinessCheck) -> list[Route]:
    """``GET /healthz`` (the process answers) and ``GET /readyz`` (its dependencies answer)."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = await check(request)
        if all(_is_ready(result) for result in checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        return error_response(503, "not_ready", "a dependency is not ready", checks=checks)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
