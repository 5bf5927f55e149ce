"""The production transport (litellm's aiohttp one, which respx cannot see) on the real wire.

A real HTTP server on loopback speaks OpenAI's chat-completions format; the gateway calls it
with the settings production uses (`llm_http_transport="aiohttp"`). What the server received
(body, headers) and what the gateway read back (usage, cost, ledger row) are asserted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from llm_service.db.pool import tenant_transaction
from llm_service.llm.gateway import LlmGateway, LlmRequest
from llm_service.llm.litellm_setup import use_transport
from llm_service.llm.pricing import build_price_book
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.llm_service.llm.test_gateway import openai_completion


class WireStub:
    """An OpenAI-compatible server on 127.0.0.1 that keeps every request it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.reply: dict[str, Any] = openai_completion(prompt_tokens=9, completion_tokens=4)
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.requests.append((request.path, dict(request.headers), body))
        return web.json_response(self.reply)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def wire() -> AsyncIterator[WireStub]:
    stub = WireStub()
    await stub.start()
    try:
        yield stub
    finally:
        await stub.stop()


@pytest.fixture
def aiohttp_sends(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs litellm's aiohttp transport sent (spied on, still sending)."""
    from litellm.llms.custom_httpx.aiohttp_transport import LiteLLMAiohttpTransport

    sent: list[str] = []
    real = LiteLLMAiohttpTransport.handle_async_request

    async def spy(self: Any, request: Any) -> Any:
        sent.append(str(request.url))
        return await real(self, request)

    monkeypatch.setattr(LiteLLMAiohttpTransport, "handle_async_request", spy)
    return sent


@pytest.fixture
def production_gateway(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    wire: WireStub,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[LlmGateway]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wire-test")
    settings = test_settings.model_copy(
        update={
            "llm_model": "openai/gpt-4o-mini",
            "llm_api_base": wire.base,
            "llm_max_attempts": 1,
            "llm_http_transport": "aiohttp",
        }
    )
    assert Settings.model_fields["llm_http_transport"].default == "aiohttp"
    try:
        yield LlmGateway(settings, app_pool, build_price_book(settings))
    finally:
        use_transport(test_settings.llm_http_transport)  # the respx tests' transport again


async def test_the_production_transport_speaks_openai_on_the_wire(
    production_gateway: LlmGateway,
    wire: WireStub,
    aiohttp_sends: list[str],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
) -> None:
    result = await production_gateway.complete(
        LlmRequest(
            tenant_id=tenant.tenant_id,
            endpoint="explanations",
            messages=[
                {"role": "system", "content": "You explain attribution."},
                {"role": "user", "content": "Why did ROAS drop? Mail me at jane.doe@example.com"},
            ],
            max_tokens=77,
        )
    )
    assert aiohttp_sends == [wire.base + "/chat/completions"]
    [(path, headers, body)] = wire.requests
    assert path == "/v1/chat/completions"
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["authorization"] == "Bearer sk-wire-test"
    assert lowered["content-type"].startswith("application/json")
    assert body["model"] == "gpt-4o-mini"
    assert body["max_tokens"] == 77
    assert not body.get("stream")
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    # Redacted before it left the process: the address never reached the wire.
    assert "jane.doe@example.com" not in json.dumps(body)
    assert "Why did ROAS drop?" in body["messages"][1]["content"]
    # The usage read back from the reply, priced by our ledger at gpt-4o-mini's rates.
    assert (result.input_tokens, result.output_tokens) == (9, 4)
    assert result.cost_usd == Decimal("9") * Decimal("0.15E-6") + Decimal("4") * Decimal("0.6E-6")
    assert result.content == "ok"
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT status, input_tokens, output_tokens FROM llm_api_calls WHERE id = $1",
            result.call_id,
        )
    assert row is not None and tuple(row) == ("succeeded", 9, 4)


async def test_a_reply_without_usage_on_the_wire_is_billed_at_the_reservation(
    production_gateway: LlmGateway,
    wire: WireStub,
    tenant: CreatedTenant,
) -> None:
    wire.reply = {k: v for k, v in openai_completion().items() if k != "usage"}
    result = await production_gateway.complete(
        LlmRequest(
            tenant_id=tenant.tenant_id,
            endpoint="explanations",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=40,
        )
    )
    assert len(wire.requests) == 1
    # No usage believed: billed at the worst case reserved (input estimate + all 40 outputs).
    assert result.cost_usd >= Decimal("40") * Decimal("0.6E-6")
