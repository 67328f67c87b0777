"""The aiohttp transport behind httpx, against the fake server."""

from __future__ import annotations

import asyncio

import httpx

from ai_module.providers.transport import AiohttpTransport


def test_response_body_readable_every_way(fake_server):
    async def fetch() -> tuple[httpx.Response, bytes, bytes]:
        transport = AiohttpTransport(httpx.Limits(max_connections=4))
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"{fake_server.url}/_stats")
            streamed = b"".join([chunk async for chunk in response.aiter_bytes()])
            return response, await response.aread(), streamed

    response, read, streamed = asyncio.run(fetch())
    assert response.status_code == 200
    assert response.json()["requests"] == 0
    assert read == response.content
    assert streamed == response.content
    assert response.headers["content-type"].startswith("application/json")


def test_response_content_without_read(fake_server):
    # The providers call the transport directly and read .content at once.
    async def fetch() -> httpx.Response:
        transport = AiohttpTransport(httpx.Limits(max_connections=4))
        request = httpx.Request("GET", f"{fake_server.url}/_stats")
        try:
            return await transport.handle_async_request(request)
        finally:
            await transport.aclose()

    response = asyncio.run(fetch())
    assert response.status_code == 200
    assert response.json()["requests"] == 0
