"""The body size limit, on a route that reads its body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI

from llm_service.api.body_limit import BodySizeLimit
from llm_service.api.errors import install_error_handlers

LIMIT = 1024


def _echo_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodySizeLimit, max_bytes=LIMIT)
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    return app


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=_echo_app()), base_url="http://t")


async def test_body_within_limit_is_read() -> None:
    async with _client() as client:
        response = await client.post("/echo", json={"a": "b" * 100})
    assert response.status_code == 200
    assert response.json() == {"a": "b" * 100}


async def test_declared_oversized_body_is_refused_before_reading() -> None:
    async with _client() as client:
        response = await client.post("/echo", json={"a": "b" * (LIMIT + 1)})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_streamed_oversized_body_is_refused() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": "'
        for _ in range(LIMIT // 100 + 2):
            yield b"b" * 100
        yield b'"}'

    async with _client() as client:
        response = await client.post(
            "/echo", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_malformed_json_is_a_422_without_echo() -> None:
    async with _client() as client:
        response = await client.post(
            "/echo", content=b'{"secret": "x@y.z"', headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert "x@y.z" not in response.text
