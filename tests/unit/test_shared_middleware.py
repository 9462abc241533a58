"""The shared middleware's per-request work: request ids, and the body limits only where there is a body."""

from __future__ import annotations

import re
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from shared.web.middleware import LimitsMiddleware, RequestContextMiddleware, new_request_id

REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def test_a_new_request_id_is_32_hex_digits_and_never_repeats() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert all(REQUEST_ID.fullmatch(each) for each in ids)
    assert len(set(ids)) == len(ids)


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_request_without_an_id_gets_a_fresh_one_in_the_same_shape() -> None:
    transport = httpx.ASGITransport(app=RequestContextMiddleware(_ok))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first, second = [(await client.get("/")).headers["x-request-id"] for _ in range(2)]
        adopted = (await client.get("/", headers={"X-Request-ID": "abc-123"})).headers["x-request-id"]
    assert REQUEST_ID.fullmatch(first)
    assert REQUEST_ID.fullmatch(second)
    assert first != second
    assert adopted == "abc-123"


class ReceiveSeen:
    """An app that records the receive it was given and answers 200."""

    def __init__(self) -> None:
        self.receive: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.receive = receive
        await _ok(scope, receive, send)


async def _call(app: Any, headers: list[tuple[bytes, bytes]]) -> Receive:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    await app(scope, receive, send)
    return receive


async def test_a_request_without_a_body_gets_the_servers_own_receive() -> None:
    # Nothing to count or time: no wrapper, no timer, for every GET.
    inner = ReceiveSeen()
    limits = LimitsMiddleware(inner, max_body_bytes=10, max_header_bytes=1024, body_timeout=1)
    receive = await _call(limits, [(b"host", b"test")])
    assert inner.receive is receive


async def test_a_request_that_announces_a_body_is_limited() -> None:
    for framing in [(b"content-length", b"0"), (b"transfer-encoding", b"chunked")]:
        inner = ReceiveSeen()
        limits = LimitsMiddleware(inner, max_body_bytes=10, max_header_bytes=1024, body_timeout=1)
        receive = await _call(limits, [(b"host", b"test"), framing])
        assert inner.receive is not receive, framing
