"""Small upstream responses are read whole and sent in one piece; large or unsized ones stream."""

from __future__ import annotations

import gzip

import httpx
import pytest
from starlette.responses import StreamingResponse

from services.gateway import proxy
from shared import BadGateway


async def upstream(response: httpx.Response) -> httpx.Response:
    """``response`` as the gateway's client hands it over: sent, body not yet read."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: response))
    return await client.send(client.build_request("GET", "http://orders/orders"), stream=True)


async def test_a_small_response_is_buffered_with_its_raw_bytes_and_headers() -> None:
    raw = gzip.compress(b'{"orders": []}')
    sent = await upstream(
        httpx.Response(
            200,
            headers={"Content-Encoding": "gzip", "Content-Length": str(len(raw))},
            stream=httpx.ByteStream(raw),
        )
    )
    headers = [(b"content-encoding", b"gzip"), (b"content-length", str(len(raw)).encode())]

    response = await proxy.respond("orders", sent, headers)

    assert not isinstance(response, StreamingResponse)
    assert response.body == raw, "still encoded: the client asked for gzip, not the gateway"
    assert response.raw_headers == headers
    assert sent.is_closed, "the upstream connection went back to the pool at once"


@pytest.mark.parametrize(
    "response_headers",
    [
        {"Content-Length": str(proxy.BUFFERED_RESPONSE_MAX_BYTES + 1)},
        {"Transfer-Encoding": "chunked"},
    ],
)
async def test_large_or_unsized_responses_stream(response_headers: dict[str, str]) -> None:
    body = b"x" * (proxy.BUFFERED_RESPONSE_MAX_BYTES + 1)
    sent = await upstream(httpx.Response(200, headers=response_headers, stream=httpx.ByteStream(body)))
    response = await proxy.respond("orders", sent, [])
    assert isinstance(response, proxy.UpstreamResponse)
    await sent.aclose()


async def test_a_body_that_breaks_off_is_a_502() -> None:
    class BrokenStream(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield b"{"
            raise httpx.ReadError("connection reset")

    sent = await upstream(httpx.Response(200, headers={"Content-Length": "100"}, stream=BrokenStream()))
    with pytest.raises(BadGateway):
        await proxy.respond("orders", sent, [])
    assert sent.is_closed
