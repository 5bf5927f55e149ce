"""The header size limit: a head past it is a 431 JSON error before any route sees it."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, Request

from llm_service.api.header_limit import HeaderSizeLimit

LIMIT = 2048


def _client(seen: list[str]) -> httpx.AsyncClient:
    app = FastAPI()
    app.add_middleware(HeaderSizeLimit, max_bytes=LIMIT)

    @app.get("/who")
    async def who(request: Request) -> dict[str, int]:
        seen.append(request.headers.get("x-pad", ""))
        return {"headers": len(request.headers)}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_head_within_the_limit_reaches_the_route() -> None:
    seen: list[str] = []
    async with _client(seen) as client:
        response = await client.get("/who", headers={"x-pad": "a" * (LIMIT // 2)})
    assert response.status_code == 200
    assert seen == ["a" * (LIMIT // 2)]


async def test_one_header_past_the_limit_is_a_431_json_error() -> None:
    seen: list[str] = []
    async with _client(seen) as client:
        response = await client.get("/who", headers={"x-pad": "a" * LIMIT})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "headers_too_large"
    assert response.headers["connection"] == "close"
    assert seen == []


async def test_many_small_headers_and_a_long_query_count_together() -> None:
    seen: list[str] = []
    async with _client(seen) as client:
        many = [(f"x-h{i}", "v" * 40) for i in range(LIMIT // 40)]
        assert (await client.get("/who", headers=many)).status_code == 431
        assert (await client.get("/who", params={"q": "z" * LIMIT})).status_code == 431
    assert seen == []
