"""Priced as billed: cached reads, cache writes and reasoning tokens in each provider's wire format.

Each expected cost is the provider's published formula, written out here with the published
rates (USD per 1M tokens), not taken from the code under test.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import respx

from llm_service.costs.csv_format import render_csv
from llm_service.costs.service import monthly_report
from llm_service.db.pool import tenant_transaction
from llm_service.finance.service import monthly_costs
from llm_service.llm.gateway import LlmGateway, LlmRequest
from llm_service.llm.pricing import build_price_book
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant

MILLION = Decimal(1_000_000)
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
GEMINI_URL = "https://generativelanguage.googleapis.com/"
# A stable prefix long enough to be cached (OpenAI: 1,024 tokens or more).
SYSTEM = "You are a careful marketing-attribution analyst; cite evidence for every claim. " * 120


def gateway_for(settings: Settings, pool: asyncpg.Pool, model: str) -> LlmGateway:
    changed = settings.model_copy(update={"llm_model": model, "llm_max_attempts": 1})
    return LlmGateway(changed, pool, build_price_book(changed))


def request_for(tenant: CreatedTenant, max_tokens: int = 400) -> LlmRequest:
    return LlmRequest(
        tenant_id=tenant.tenant_id,
        endpoint="investigations",
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Why did paid social revenue drop last week?"},
        ],
        max_tokens=max_tokens,
    )


async def only_row(pool: asyncpg.Pool, tenant_id: UUID) -> asyncpg.Record:
    async with tenant_transaction(pool, tenant_id) as conn:
        [row] = await conn.fetch("SELECT * FROM llm_api_calls")
        return row


async def monthly(pool: asyncpg.Pool, tenant_id: UUID) -> asyncpg.Record:
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow("SELECT * FROM llm_monthly_costs")
        assert row is not None
        return row


async def assert_reconciled(pool: asyncpg.Pool, tenant_id: UUID) -> None:
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT * FROM fn_reconcile_monthly_costs() WHERE tenant_id = $1", tenant_id
        )
    assert rows, "no monthly row to reconcile"
    for row in rows:
        assert row["recorded_cost_cents"] == row["computed_cost_cents"]
        assert row["breakdowns_match"] is True


def cents(usd: Decimal) -> Decimal:
    return (usd * 100).quantize(Decimal("1e-10"))


async def assert_reported(
    pool: asyncpg.Pool, tenant_id: UUID, expected_usd: Decimal, kinds: dict[str, int]
) -> None:
    """The ledger row, the monthly row, the costs report, its CSV and finance all agree."""
    row = await only_row(pool, tenant_id)
    assert row["usage_anomaly"] is None
    assert row["cost_cents"] == cents(expected_usd)
    stored = row["usage_breakdown"]
    assert {kind: entry["tokens"] for kind, entry in stored.items()} == kinds
    month = await monthly(pool, tenant_id)
    assert month["total_cost_cents"] == row["cost_cents"]
    assert {k: v["tokens"] for k, v in month["kind_breakdown"].items()} == kinds
    assert sum(Decimal(str(v["cost_cents"])) for v in month["kind_breakdown"].values()) == cents(
        expected_usd
    )
    await assert_reconciled(pool, tenant_id)

    today = datetime.now(UTC).date().replace(day=1)
    report = await monthly_report(pool, tenant_id, today)
    assert {k.kind: k.tokens for k in report.by_kind} == kinds
    assert Decimal(report.cached_cost_cents) + Decimal(report.uncached_cost_cents) == cents(
        expected_usd
    )
    assert Decimal(report.unitemised_cost_cents) == 0
    lines = list(csv.DictReader(io.StringIO(render_csv(report))))
    tokens = {
        r["name"]: r["input_tokens"] or r["output_tokens"] for r in lines if r["kind"] == "token"
    }
    assert tokens == {k: str(v) for k, v in kinds.items()}
    finance = await monthly_costs(pool, today)
    [mine] = [t for t in finance.tenants if t.tenant_id == tenant_id]
    assert mine.by_kind == report.by_kind
    assert mine.caching_saved_cents == report.caching_saved_cents


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-test")


@respx.mock
async def test_openai_cached_tokens_are_billed_at_the_cached_rate(
    test_settings: Settings, tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = gateway_for(test_settings, app_pool, "openai/gpt-4o-mini")
    request = request_for(tenant)
    prompt = gateway.count_tokens(request.messages, None)
    cached = 1024 * (prompt // 1024)
    assert cached >= 1024
    respx.post(OPENAI_URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "id": "chatcmpl-cached",
                "object": "chat.completion",
                "created": 1_764_000_000,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": 42,
                    "total_tokens": prompt + 42,
                    "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
                },
            },
        )
    )
    result = await gateway.complete(request)

    # OpenAI: uncached prompt at $0.15/1M, cached at $0.075/1M, output at $0.60/1M.
    expected = (
        Decimal(prompt - cached) * Decimal("0.15")
        + Decimal(cached) * Decimal("0.075")
        + Decimal(42) * Decimal("0.60")
    ) / MILLION
    assert result.cost_usd == expected
    await assert_reported(
        app_pool, tenant.tenant_id, expected, {"input": prompt - cached, "cache_read": cached,
                                                "output": 42}
    )  # fmt: skip


def anthropic_reply(usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "msg_01cached",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Paid social fell after the budget cut."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


@respx.mock
async def test_anthropic_cache_reads_and_writes_are_billed_at_their_rates(
    test_settings: Settings, tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = gateway_for(test_settings, app_pool, "anthropic/claude-sonnet-4-5")
    request = request_for(tenant)
    prompt = gateway.count_tokens(request.messages, None)
    read, written, fresh = prompt // 2, prompt // 4, 30
    route = respx.post(ANTHROPIC_URL).mock(
        return_value=httpx.Response(
            200,
            json=anthropic_reply(
                {
                    "input_tokens": fresh,
                    "cache_read_input_tokens": read,
                    "cache_creation_input_tokens": written,
                    "output_tokens": 120,
                }
            ),
        )
    )
    result = await gateway.complete(request)

    # Anthropic (claude-sonnet-4-5): input $3/1M, cache read $0.30/1M, cache write $3.75/1M,
    # output $15/1M; input_tokens excludes both cache counts.
    expected = (
        Decimal(fresh) * 3
        + Decimal(read) * Decimal("0.30")
        + Decimal(written) * Decimal("3.75")
        + Decimal(120) * 15
    ) / MILLION
    assert result.cost_usd == expected
    await assert_reported(
        app_pool,
        tenant.tenant_id,
        expected,
        {"input": fresh, "cache_read": read, "cache_write": written, "output": 120},
    )
    # The stable prefix carries a cache_control breakpoint, and the reservation assumed the
    # whole prompt could be written to the cache (the dearer rate) and nothing read from it.
    body = json.loads(route.calls.last.request.content)
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["system"][-1]["text"] == SYSTEM
    row = await only_row(app_pool, tenant.tenant_id)
    assert row["reserved_cents"] >= cents(
        (Decimal(prompt) * Decimal("3.75") + Decimal(row["max_tokens"]) * 15) / MILLION
    )


@respx.mock
async def test_anthropic_cache_counts_beyond_the_prompt_are_billed_at_the_reservation(
    test_settings: Settings, tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = gateway_for(test_settings, app_pool, "anthropic/claude-sonnet-4-5")
    request = request_for(tenant)
    prompt = gateway.count_tokens(request.messages, None)
    # Cheap cached reads that, together, are far more input than the prompt could hold.
    respx.post(ANTHROPIC_URL).mock(
        return_value=httpx.Response(
            200,
            json=anthropic_reply(
                {"input_tokens": 1, "cache_read_input_tokens": 10 * prompt, "output_tokens": 5}
            ),
        )
    )
    result = await gateway.complete(request)
    row = await only_row(app_pool, tenant.tenant_id)
    assert row["usage_anomaly"] is not None
    assert row["cost_cents"] == row["reserved_cents"]
    assert result.cost_usd * 100 == row["reserved_cents"]
    assert row["usage_breakdown"] is None
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_gemini_cached_content_and_thoughts_are_billed_as_published(
    test_settings: Settings, tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = gateway_for(test_settings, app_pool, "gemini/gemini-2.5-flash")
    request = request_for(tenant)
    prompt = gateway.count_tokens(request.messages, None)
    cached = prompt // 2
    route = respx.post(url__startswith=GEMINI_URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "candidates": [
                    {
                        "content": {"parts": [{"text": "ok"}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": prompt,
                    "candidatesTokenCount": 50,
                    "thoughtsTokenCount": 70,
                    "totalTokenCount": prompt + 120,
                    "cachedContentTokenCount": cached,
                },
                "modelVersion": "gemini-2.5-flash",
            },
        )
    )
    result = await gateway.complete(request)
    assert route.call_count == 1

    # Gemini 2.5 Flash: input $0.30/1M, cached $0.03/1M (promptTokenCount includes it), output
    # and thinking $2.50/1M.
    expected = (
        Decimal(prompt - cached) * Decimal("0.30")
        + Decimal(cached) * Decimal("0.03")
        + Decimal(50 + 70) * Decimal("2.50")
    ) / MILLION
    assert result.cost_usd == expected
    await assert_reported(
        app_pool,
        tenant.tenant_id,
        expected,
        {"input": prompt - cached, "cache_read": cached, "output": 50, "reasoning": 70},
    )
