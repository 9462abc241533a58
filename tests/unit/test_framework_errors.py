"""The router's own 404 and 405 speak the same lowercase prose as every other error detail."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from shared.web import build_app


@contextlib.asynccontextmanager
async def _nothing(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {}


async def _ready(request: Request) -> dict[str, Any]:
    return {"ok": True}


async def _hello(request: Request) -> Response:
    return JSONResponse({"hello": "world"})


@pytest.fixture
def client() -> TestClient:
    return TestClient(
        build_app([Route("/hello", _hello, methods=["GET"])], lifespan=_nothing, readiness=_ready)
    )


def test_a_wrong_method_says_which_methods_the_path_takes(client: TestClient) -> None:
    response = client.post("/hello")

    assert response.status_code == 405
    allowed = response.headers["allow"]
    assert response.json() == {
        "error": "method_not_allowed",
        "detail": f"this path does not take POST; it takes {allowed}",
    }


def test_an_unknown_path_is_a_lowercase_sentence_too(client: TestClient) -> None:
    response = client.get("/nowhere")

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "nothing is served at this path"}
