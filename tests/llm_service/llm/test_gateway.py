"""The gateway against providers mocked at the HTTP layer in their real wire formats."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import respx

from budgets.prices import PriceBook
from llm_service.db.pool import tenant_transaction
from llm_service.llm.gateway import LlmGateway, LlmRequest
from llm_service.llm.pricing import build_price_book
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant

OPENAI_URL = "https://api.openai.com/v1/chat/completions"


def openai_completion(
    content: str = "ok", prompt_tokens: int = 12, completion_tokens: int = 3
) -> dict[str, Any]:
    """A chat completion body as OpenAI sends it."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@pytest.fixture
def openai_settings(test_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "llm_max_attempts": 3}
    )


@pytest.fixture
def gateway(openai_settings: Settings, app_pool: asyncpg.Pool) -> LlmGateway:
    return LlmGateway(openai_settings, app_pool, build_price_book(openai_settings))


async def _calls(pool: asyncpg.Pool, tenant_id: Any) -> list[asyncpg.Record]:
    async with tenant_transaction(pool, tenant_id) as conn:
        return list(await conn.fetch("SELECT * FROM llm_api_calls ORDER BY created_at, attempt"))


@respx.mock
async def test_successful_call_is_settled_at_exact_cost(
    gateway: LlmGateway, tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    route = respx.post(OPENAI_URL).mock(
        return_value=httpx.Response(
            200, json=openai_completion(prompt_tokens=1, completion_tokens=0)
        )
    )
    result = await gateway.complete(
        LlmRequest(
            tenant_id=tenant.tenant_id,
            endpoint="explanations",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=50,
        )
    )
    assert route.call_count == 1
    assert result.cost_usd == Decimal("1.5E-7")
    calls = await _calls(app_pool, tenant.tenant_id)
    assert [c["status"] for c in calls] == ["succeeded"]
    assert calls[0]["cost_cents"] == Decimal("0.0000150000")
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        total = await conn.fetchval("SELECT total_cost_cents FROM llm_monthly_costs")
    assert total == Decimal("0.0000150000")


def test_price_book_type(openai_settings: Settings) -> None:
    assert isinstance(build_price_book(openai_settings), PriceBook)
