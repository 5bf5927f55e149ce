"""Red team (issue 16 with issue 10's trust rules): attacks on "priced as billed".

Each test asserts the SAFE/correct behaviour, so a broken promise FAILS. Expected bills are
computed in each test from the providers' published prices (USD per 1M tokens, written out
here), never from the product's price book. Providers are mocked with respx in their real wire
formats (OpenAI chat completions, Anthropic messages, Gemini generateContent); the ledger is the
real PostgreSQL built by the migrations; forgery attacks run as the application role (llm_app).

Docstrings marked `BROKE:` reproduce an attack that succeeded when written: they assert the safe
behaviour and so fail until the product is fixed (for the parametrised cached-lies test, only its
`cached_float_fraction` case breaks: the money is safe, but the call fails instead of being
flagged as a usage anomaly).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import ROUND_CEILING, Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import respx

from budgets.ceiling import DEFAULT_MAX_INPUT_UNDERCOUNT
from budgets.prices import PriceBook
from budgets.usage import UsageBounds, UsageDetails, judge_usage
from llm_service.db.pool import tenant_transaction
from llm_service.llm.gateway import LlmGateway, LlmRequest
from llm_service.llm.litellm_setup import load_litellm
from llm_service.llm.pricing import build_price_book
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.helpers.app_role import insert_pending, set_session_tenant
from tests.helpers.openai_stub import fast_backoff

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
GEMINI_URL = r"https://generativelanguage\.googleapis\.com/.*generateContent.*"
M = Decimal(1_000_000)
TEN_PLACES = Decimal("0.0000000001")

# Published prices, USD per 1M tokens (provider pricing pages, matching litellm's pinned map).
GPT_4O_MINI = {"input": Decimal("0.15"), "cached": Decimal("0.075"), "output": Decimal("0.60")}
HAIKU_4_5 = {
    "input": Decimal("1.00"),
    "cache_read": Decimal("0.10"),
    "cache_write": Decimal("1.25"),
    "output": Decimal("5.00"),
}
GEMINI_FLASH = {"input": Decimal("0.30"), "cached": Decimal("0.03"), "output": Decimal("2.50")}
GPT_AUDIO_MINI = {
    "input": Decimal("0.60"),
    "input_audio": Decimal("10.00"),
    "output": Decimal("2.40"),
    "output_audio": Decimal("20.00"),
}

LONG_TEXT = "The paid social campaign lost attributed revenue in week 47. " * 200


def cents(usd: Decimal) -> Decimal:
    """The ledger's cents: USD x 100 rounded UP at 10 places (never under-recorded)."""
    return (usd * 100).quantize(TEN_PLACES, rounding=ROUND_CEILING)


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_backoff(monkeypatch)


def make_gateway(
    settings: Settings,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    **extra: Any,
) -> LlmGateway:
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.setenv(key, "sk-test")
    cfg = settings.model_copy(update={"llm_model": model, "llm_max_attempts": 1, **extra})
    return LlmGateway(cfg, pool, build_price_book(cfg))


def messages() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You explain marketing attribution. " + LONG_TEXT},
        {"role": "user", "content": "Why did paid social revenue drop?"},
    ]


def openai_body(usage: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-rtp",
        "object": "chat.completion",
        "created": 1764000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def anthropic_body(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_rtp",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def gemini_body(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "ok"}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-flash",
    }


async def one_call(
    gateway: LlmGateway,
    pool: asyncpg.Pool,
    tenant: CreatedTenant,
    url: str,
    body: dict[str, Any] | str,
    *,
    max_tokens: int = 50,
    regex: bool = False,
) -> tuple[asyncpg.Record, list[httpx.Request]]:
    """One completion against a provider answering `body`; the call's ledger row and requests."""
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    with respx.mock:
        route = (respx.post(url__regex=url) if regex else respx.post(url)).mock(
            return_value=httpx.Response(
                200, content=content, headers={"content-type": "application/json"}
            )
        )
        # The run may fail; the money must still be settled (asserted on the row).
        with contextlib.suppress(Exception):
            await gateway.complete(
                LlmRequest(
                    tenant_id=tenant.tenant_id,
                    endpoint="explanations",
                    messages=messages(),
                    max_tokens=max_tokens,
                )
            )
        sent = [c.request for c in route.calls]
    async with tenant_transaction(pool, tenant.tenant_id) as conn:
        rows = await conn.fetch("SELECT * FROM llm_api_calls ORDER BY created_at DESC, id LIMIT 1")
    assert rows, "no ledger row was written"
    assert rows[0]["status"] != "pending"
    return rows[0], sent


def counted(gateway: LlmGateway) -> int:
    return gateway.count_tokens(messages(), None)


def breakdown(row: asyncpg.Record) -> dict[str, Any]:
    raw = row["usage_breakdown"]
    value: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else (raw or {})
    return value


# ---------------------------------------------------------------------------------------------
# OpenAI: cached reads, lies in the cached field, cache creation on a model without writes
# ---------------------------------------------------------------------------------------------


async def test_openai_cached_tokens_priced_to_the_last_digit(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Correct when it passes: 1,024 cached of N prompt tokens at $0.075/M, the rest $0.15/M."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "openai/gpt-4o-mini")
    prompt, cached, out = counted(gw), 1024, 7
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    row, _ = await one_call(gw, app_pool, tenant, OPENAI_URL, openai_body(usage))
    bill = (
        Decimal(prompt - cached) * GPT_4O_MINI["input"]
        + Decimal(cached) * GPT_4O_MINI["cached"]
        + Decimal(out) * GPT_4O_MINI["output"]
    ) / M
    assert row["usage_anomaly"] is None
    assert row["cost_cents"] == cents(bill)
    kinds = breakdown(row)
    assert kinds["cache_read"]["tokens"] == cached
    assert (
        Decimal(kinds["cache_read"]["cost_cents"]) == Decimal(cached) * Decimal("0.075") / M * 100
    )


OPENAI_CACHED_LIES: dict[str, Callable[[int], dict[str, Any]]] = {
    "cached_above_prompt": lambda p: {"cached_tokens": p + 1},
    "negative_cached": lambda p: {"cached_tokens": -500},
    "cached_huge": lambda p: {"cached_tokens": 10**30},
    "cached_float_fraction": lambda p: {"cached_tokens": 100.5},
}


@pytest.mark.parametrize("lie", sorted(OPENAI_CACHED_LIES))
async def test_openai_cached_lies_are_never_cheaper_than_the_reservation(
    lie: str,
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused when it passes: an impossible cached count is an anomaly billed at the
    reservation (the most the call could have cost), never a discount."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "openai/gpt-4o-mini")
    prompt = counted(gw)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": 5,
        "total_tokens": prompt + 5,
        "prompt_tokens_details": OPENAI_CACHED_LIES[lie](prompt),
    }
    row, _ = await one_call(gw, app_pool, tenant, OPENAI_URL, openai_body(usage))
    seen = (
        f"{row['status']} {row['error_type']} {row['error_message']}; "
        f"billed {row['cost_cents']} of {row['reserved_cents']}"
    )
    assert row["usage_anomaly"] is not None, seen
    assert row["cost_cents"] == row["reserved_cents"]
    assert row["usage_breakdown"] is None


@pytest.mark.parametrize("shape", ["string", "integral_float"])
async def test_openai_cached_as_string_or_float_is_not_a_discount(
    shape: str,
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused or correct: "1024" / 1024.0 is either an anomaly at the reservation or priced
    exactly as 1,024 cached tokens; never anything else."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "openai/gpt-4o-mini")
    prompt = counted(gw)
    value: Any = "1024" if shape == "string" else 1024.0
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": 5,
        "total_tokens": prompt + 5,
        "prompt_tokens_details": {"cached_tokens": value},
    }
    row, _ = await one_call(gw, app_pool, tenant, OPENAI_URL, openai_body(usage))
    exact = cents(
        (
            Decimal(prompt - 1024) * GPT_4O_MINI["input"]
            + Decimal(1024) * GPT_4O_MINI["cached"]
            + 5 * GPT_4O_MINI["output"]
        )
        / M
    )
    assert row["cost_cents"] in {row["reserved_cents"], exact}
    assert row["cost_cents"] <= row["reserved_cents"]


async def test_cache_creation_on_an_openai_model_is_flagged_and_not_free(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Correct when it passes: OpenAI has no cache-write price; 600 "cache creation" tokens are
    billed at the dearest known input rate ($0.15/M), flagged, within the reservation."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "openai/gpt-4o-mini")
    prompt = counted(gw)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": 5,
        "total_tokens": prompt + 5,
        "cache_creation_input_tokens": 600,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    row, _ = await one_call(gw, app_pool, tenant, OPENAI_URL, openai_body(usage))
    bill = (Decimal(prompt) * GPT_4O_MINI["input"] + 5 * GPT_4O_MINI["output"]) / M
    assert row["cost_cents"] <= row["reserved_cents"]
    if row["usage_anomaly"] is None:
        assert row["cost_cents"] == cents(bill)
        kinds = breakdown(row)
        assert kinds["cache_write"]["tokens"] == 600
        assert kinds["cache_write"]["rate_known"] is False
    else:
        assert row["cost_cents"] == row["reserved_cents"]


async def test_reasoning_above_max_tokens_is_an_anomaly(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused when it passes: 5,000 reasoning tokens on a call granted 50 output tokens."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "openai/gpt-4o-mini")
    prompt = counted(gw)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": 5_005,
        "total_tokens": prompt + 5_005,
        "completion_tokens_details": {"reasoning_tokens": 5_000},
    }
    row, _ = await one_call(gw, app_pool, tenant, OPENAI_URL, openai_body(usage))
    assert row["usage_anomaly"] is not None
    assert row["cost_cents"] == row["reserved_cents"]


async def test_reasoning_above_completion_is_an_anomaly(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused when it passes: reasoning 40 inside a completion count of 3 is impossible."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "openai/gpt-4o-mini")
    prompt = counted(gw)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": 3,
        "total_tokens": prompt + 3,
        "completion_tokens_details": {"reasoning_tokens": 40},
    }
    row, _ = await one_call(gw, app_pool, tenant, OPENAI_URL, openai_body(usage))
    assert row["usage_anomaly"] is not None
    assert row["cost_cents"] == row["reserved_cents"]


async def test_audio_tokens_priced_at_the_audio_rate_within_the_reservation(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BROKE: The worst case must cover audio: gpt-audio-mini bills output audio at $20/M against
    $2.40/M for text. A reply of 40 output tokens, 30 of them audio, is what OpenAI bills
    (within max_tokens 50): the reservation must cover it and the row must record it exactly."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "openai/gpt-audio-mini")
    prompt = counted(gw)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": 40,
        "total_tokens": prompt + 40,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 30},
    }
    row, _ = await one_call(gw, app_pool, tenant, OPENAI_URL, openai_body(usage))
    bill = (
        Decimal(prompt) * GPT_AUDIO_MINI["input"]
        + 10 * GPT_AUDIO_MINI["output"]
        + 30 * GPT_AUDIO_MINI["output_audio"]
    ) / M
    assert row["reserved_cents"] >= cents(bill), "reservation is below what the provider bills"
    assert row["usage_anomaly"] is None, row["usage_anomaly"]
    assert row["cost_cents"] == cents(bill)


# ---------------------------------------------------------------------------------------------
# Anthropic: cache reads and writes, cache_control where no write rate is known
# ---------------------------------------------------------------------------------------------


async def test_anthropic_cache_read_and_write_priced_to_the_last_digit(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Correct when it passes: input_tokens excludes the cache fields; each is billed at its own
    rate ($1 base, $0.10 read, $1.25 write per 1M for claude-haiku-4-5)."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "anthropic/claude-haiku-4-5")
    total = counted(gw)
    read, write = total // 2, total // 4
    fresh = total - read - write
    usage = {
        "input_tokens": fresh,
        "output_tokens": 9,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
    }
    row, sent = await one_call(gw, app_pool, tenant, ANTHROPIC_URL, anthropic_body(usage))
    bill = (
        Decimal(fresh) * HAIKU_4_5["input"]
        + Decimal(read) * HAIKU_4_5["cache_read"]
        + Decimal(write) * HAIKU_4_5["cache_write"]
        + 9 * HAIKU_4_5["output"]
    ) / M
    assert "cache_control" in sent[0].content.decode()
    assert row["usage_anomaly"] is None, row["usage_anomaly"]
    assert row["cost_cents"] == cents(bill)
    assert row["cost_cents"] <= row["reserved_cents"]
    worst = (Decimal(total) * HAIKU_4_5["cache_write"] + 50 * HAIKU_4_5["output"]) / M
    assert row["reserved_cents"] >= cents(worst), "reservation assumes no cache writes"


async def test_anthropic_cache_control_without_a_write_rate_reserves_the_real_worst_case(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BROKE: an operator prices an Anthropic model by override ([input, output] only, no
    cache-write rate). The gateway still marks cache_control, so Anthropic may write the whole
    prefix at 1.25x the base rate. The reply writes as many tokens as the reservation's own
    margined input count (so the usage is believable) and uses all 50 output tokens: the
    reservation must cover Anthropic's bill (or no breakpoint be sent), and the ledger must
    record that bill."""
    overrides = {"anthropic/claude-haiku-4-5": (Decimal("0.000001"), Decimal("0.000005"))}
    gw = make_gateway(
        test_settings,
        app_pool,
        monkeypatch,
        "anthropic/claude-haiku-4-5",
        llm_price_overrides=overrides,
    )
    margined = int(
        (Decimal(counted(gw)) * (1 + DEFAULT_MAX_INPUT_UNDERCOUNT)).to_integral_value(
            rounding=ROUND_CEILING
        )
    )
    usage = {
        "input_tokens": 0,
        "output_tokens": 50,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": margined,
    }
    row, sent = await one_call(gw, app_pool, tenant, ANTHROPIC_URL, anthropic_body(usage))
    marked = "cache_control" in sent[0].content.decode()
    # Anthropic: 5-minute cache writes cost 1.25x the base input price.
    bill = (Decimal(margined) * HAIKU_4_5["input"] * Decimal("1.25") + 50 * HAIKU_4_5["output"]) / M
    if marked:
        assert row["reserved_cents"] >= cents(bill), (
            f"cache_control sent; reservation {row['reserved_cents']} < Anthropic's bill "
            f"{cents(bill)} ({row['usage_anomaly']}; recorded {row['cost_cents']})"
        )
        assert row["cost_cents"] == cents(bill)


ANTHROPIC_CACHE_LIES: dict[str, Callable[[int], dict[str, Any]]] = {
    # input_tokens inflated so that litellm's sum still equals the counted prompt
    "negative_cache_read": lambda n: {"input_tokens": n + 1000, "cache_read_input_tokens": -1000},
    "negative_cache_write": lambda n: {
        "input_tokens": n + 1000,
        "cache_creation_input_tokens": -1000,
    },
    "string_cache_read": lambda n: {"input_tokens": n - 5, "cache_read_input_tokens": "5"},
    "fractional_cache_write": lambda n: {
        "input_tokens": n - 10,
        "cache_creation_input_tokens": 10.5,
    },
    "huge_cache_read": lambda n: {"input_tokens": 0, "cache_read_input_tokens": 10**20},
}


@pytest.mark.parametrize("lie", sorted(ANTHROPIC_CACHE_LIES))
async def test_anthropic_cache_field_lies_are_billed_at_the_reservation(
    lie: str,
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused when it passes: an impossible cache field is never a discount; the call is
    billed at its reservation, within it, and nothing is left pending."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "anthropic/claude-haiku-4-5")
    usage = {"output_tokens": 5, **ANTHROPIC_CACHE_LIES[lie](counted(gw))}
    row, _ = await one_call(gw, app_pool, tenant, ANTHROPIC_URL, anthropic_body(usage))
    seen = f"{row['status']} {row['usage_anomaly']} {row['usage_breakdown']}"
    assert row["cost_cents"] == row["reserved_cents"], seen
    assert row["usage_breakdown"] is None, seen


# ---------------------------------------------------------------------------------------------
# Gemini: cachedContentTokenCount and thoughtsTokenCount
# ---------------------------------------------------------------------------------------------


async def test_gemini_cached_and_thoughts_priced_to_the_last_digit(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Correct when it passes: Gemini counts cached inside promptTokenCount and bills thoughts
    at the output rate ($0.30 / $0.03 cached / $2.50 per 1M for gemini-2.5-flash)."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "gemini/gemini-2.5-flash")
    prompt = counted(gw)
    cached, candidates, thoughts = prompt // 2, 6, 20
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "thoughtsTokenCount": thoughts,
        "cachedContentTokenCount": cached,
        "totalTokenCount": prompt + candidates + thoughts,
    }
    row, _ = await one_call(gw, app_pool, tenant, GEMINI_URL, gemini_body(usage), regex=True)
    bill = (
        Decimal(prompt - cached) * GEMINI_FLASH["input"]
        + Decimal(cached) * GEMINI_FLASH["cached"]
        + Decimal(candidates + thoughts) * GEMINI_FLASH["output"]
    ) / M
    assert row["usage_anomaly"] is None, row["usage_anomaly"]
    assert row["cost_cents"] == cents(bill)


async def test_gemini_cached_above_prompt_is_an_anomaly(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused when it passes: cachedContentTokenCount above promptTokenCount."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "gemini/gemini-2.5-flash")
    prompt = counted(gw)
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": 3,
        "cachedContentTokenCount": prompt * 5,
        "totalTokenCount": prompt + 3,
    }
    row, _ = await one_call(gw, app_pool, tenant, GEMINI_URL, gemini_body(usage), regex=True)
    assert row["usage_anomaly"] is not None
    assert row["cost_cents"] == row["reserved_cents"]


# ---------------------------------------------------------------------------------------------
# Tiered prices (pure pricing, with the pinned map): the provider bills above the threshold
# ---------------------------------------------------------------------------------------------


def pinned_book() -> PriceBook:
    return PriceBook(model_cost=load_litellm().model_cost)


def bounds_for(prompt: int, out: int) -> UsageBounds:
    return UsageBounds(prompt, prompt, out, Decimal(1000))


@pytest.mark.parametrize("prompt", [200_000, 200_001])
def test_gemini_pro_tier_applies_only_above_200k(prompt: int) -> None:
    """BROKE: Google bills gemini-2.5-pro at $1.25/$10 per 1M for prompts "<= 200k tokens" and at
    $2.50/$15 above; cached reads $0.125 / $0.25. At exactly 200,000 the base rates apply."""
    price = pinned_book().price_for("gemini/gemini-2.5-pro")
    cached, out = 50_000, 100
    billed = judge_usage(
        price, bounds_for(prompt, out), prompt, out, UsageDetails(cache_read=cached)
    )
    above = prompt > 200_000
    rin = Decimal("2.50") if above else Decimal("1.25")
    rcache = Decimal("0.25") if above else Decimal("0.125")
    rout = Decimal("15") if above else Decimal("10")
    bill = (Decimal(prompt - cached) * rin + Decimal(cached) * rcache + out * rout) / M
    assert billed.anomaly is None
    assert billed.cost_usd == bill


# ---------------------------------------------------------------------------------------------
# Rounding: many tiny calls against the monthly row
# ---------------------------------------------------------------------------------------------


async def test_many_tiny_cached_calls_sum_to_the_monthly_row_and_the_bill(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Correct when it passes: 25 calls with odd cached counts; the month equals the sum of
    the provider's exact bills, the per-kind month equals the per-kind calls, reconcile clean."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "openai/gpt-4o-mini")
    prompt = counted(gw)
    expected = Decimal(0)
    expected_cached = Decimal(0)
    for i in range(25):
        cached, out = 1 + 37 * i, 1 + (i % 3)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": out,
            "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        row, _ = await one_call(gw, app_pool, tenant, OPENAI_URL, openai_body(usage))
        bill = (
            Decimal(prompt - cached) * GPT_4O_MINI["input"]
            + Decimal(cached) * GPT_4O_MINI["cached"]
            + Decimal(out) * GPT_4O_MINI["output"]
        ) / M
        assert row["cost_cents"] == cents(bill)
        expected += bill * 100
        expected_cached += Decimal(cached) * GPT_4O_MINI["cached"] / M * 100
    month = await owner_pool.fetchrow(
        "SELECT total_cost_cents, kind_breakdown FROM llm_monthly_costs WHERE tenant_id = $1",
        tenant.tenant_id,
    )
    assert month["total_cost_cents"] == expected
    kinds = month["kind_breakdown"]
    assert Decimal(str(kinds["cache_read"]["cost_cents"])) == expected_cached
    itemised = sum(Decimal(str(v["cost_cents"])) for v in kinds.values())
    assert itemised == expected
    bad = await owner_pool.fetch(
        "SELECT * FROM fn_reconcile_monthly_costs() WHERE tenant_id = $1 AND NOT ("
        "recorded_cost_cents = computed_cost_cents AND recorded_calls = computed_calls "
        "AND breakdowns_match)",
        tenant.tenant_id,
    )
    assert not bad


# ---------------------------------------------------------------------------------------------
# The breakdown in the costs API, its CSV and the finance JSON
# ---------------------------------------------------------------------------------------------

FINANCE_TOKEN = "finance-redteam-token-0123456789abcdef"


@pytest.fixture
async def api(test_settings: Settings, app_pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    from llm_service.api.app import create_app

    app = create_app(
        test_settings.model_copy(update={"finance_api_token": FINANCE_TOKEN}), pool=app_pool
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_costs_api_csv_and_finance_show_the_cached_breakdown(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    api: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Correct when it passes: one call with 1,024 cached tokens shows as cached spend
    (1,024 x $0.075/M) and a saving of 1,024 x ($0.15 - $0.075)/M in every report."""
    gw = make_gateway(test_settings, app_pool, monkeypatch, "openai/gpt-4o-mini")
    prompt = counted(gw)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": 4,
        "total_tokens": prompt + 4,
        "prompt_tokens_details": {"cached_tokens": 1024},
    }
    row, _ = await one_call(gw, app_pool, tenant, OPENAI_URL, openai_body(usage))
    month = row["started_at"].strftime("%Y-%m")
    cached_cents = Decimal(1024) * GPT_4O_MINI["cached"] / M * 100
    saved_cents = Decimal(1024) * (GPT_4O_MINI["input"] - GPT_4O_MINI["cached"]) / M * 100
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    report = await api.get(f"/v1/costs/monthly?month={month}", headers=auth)
    assert report.status_code == 200, report.text
    body = report.json()
    assert Decimal(body["cached_cost_cents"]) == cached_cents
    assert Decimal(body["caching_saved_cents"]) == saved_cents
    assert {k["kind"] for k in body["by_kind"]} >= {"input", "cache_read", "output"}
    csv = await api.get(f"/v1/costs/monthly?month={month}&format=csv", headers=auth)
    assert csv.status_code == 200 and "cache_read" in csv.text
    fin = await api.get(
        f"/v1/finance/monthly-costs?month={month}",
        headers={"Authorization": f"Bearer {FINANCE_TOKEN}"},
    )
    assert fin.status_code == 200, fin.text
    assert "cache_read" in fin.text and str(tenant.tenant_id) in fin.text


# ---------------------------------------------------------------------------------------------
# The app role forging the breakdown
# ---------------------------------------------------------------------------------------------


# The reserving request's secret (migration 012): its settle presents it.
SETTLE_TOKEN = uuid.uuid4()


async def pending_call(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> uuid.UUID:
    await set_session_tenant(conn, tenant_id)
    return await insert_pending(conn, tenant_id, Decimal(1), settle_token=SETTLE_TOKEN)


# The app's settle (migration 012: llm_app may not UPDATE a ledger row; fn_settle_call is its
# one way to write a breakdown, so the forgeries go through it).
SETTLE = (
    "SELECT fn_settle_call($1, 'succeeded', 1000, 10, $2, false, NULL, NULL, NULL, NULL, NULL, "
    f"NULL, $3::jsonb, '{SETTLE_TOKEN}')"
)
RAW_SETTLE = (
    "UPDATE llm_api_calls SET status = 'succeeded', input_tokens = 1000, output_tokens = 10, "
    "cost_cents = $2, usage_breakdown = $3::jsonb, settled_at = now() WHERE id = $1"
)


def kind(tokens: int, cost: str, uncached: str) -> dict[str, Any]:
    """One kind's entry, its rate the one its cost implies (so only the lie itself is off)."""
    rate = Decimal(cost) / 100 / tokens if tokens and Decimal(cost).is_finite() else Decimal(0)
    return {
        "tokens": tokens,
        "rate_usd": str(rate),
        "cost_cents": cost,
        "uncached_cents": uncached,
        "rate_known": True,
    }


FORGED = {
    # Totals add up; "what caching saved" is made infinite or undefined.
    "uncached_infinity": {
        "input": kind(1000, "0.015", "Infinity"),
        "output": kind(10, "0.0006", "0.0006"),
    },
    "uncached_nan": {
        "input": kind(1000, "0.015", "NaN"),
        "output": kind(10, "0.0006", "0.0006"),
    },
    # An uncached kind whose "uncached" cost differs from its cost: a saving out of nothing.
    "uncached_text_inflated": {
        "input": kind(1000, "0.015", "99999999"),
        "output": kind(10, "0.0006", "0.0006"),
    },
    # Cache reads whose uncached cost is below their cost (a negative saving hidden / forged).
    "cache_read_uncached_below_cost": {
        "cache_read": kind(1000, "0.015", "0"),
        "output": kind(10, "0.0006", "0.0006"),
    },
    # Cost moved between kinds: tokens x rate disagree with cost_cents.
    "rate_times_tokens_disagrees": {
        "input": {**kind(1000, "0.0156", "0.0156"), "rate_usd": "0.00000015"},
        "output": {**kind(10, "0", "0"), "rate_usd": "0.0000006"},
    },
}


@pytest.mark.parametrize("forgery", sorted(FORGED))
async def test_app_role_cannot_forge_a_calls_breakdown(
    forgery: str,
    app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    """BROKE: Refused when it passes: a breakdown that adds up to the call's totals but lies about
    its kinds (infinite/NaN/invented savings, cost not tokens x rate) must not be stored."""
    call_id = await pending_call(app_conn, tenant.tenant_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(RAW_SETTLE, call_id, Decimal("0.0156"), json.dumps(FORGED[forgery]))
    try:
        await app_conn.execute(SETTLE, call_id, Decimal("0.0156"), json.dumps(FORGED[forgery]))
    except asyncpg.PostgresError:
        return  # refused
    month = await owner_pool.fetchval(
        "SELECT kind_breakdown::text FROM llm_monthly_costs WHERE tenant_id = $1",
        tenant.tenant_id,
    )
    pytest.fail(f"forged breakdown accepted; the month now reads {month}")


async def test_app_role_cannot_write_the_monthly_kind_breakdown(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """Refused when it passes: llm_app updating or inserting llm_monthly_costs.kind_breakdown."""
    await app_conn.execute(
        "SELECT set_config('app.current_tenant_id', $1, false)", str(tenant.tenant_id)
    )
    for sql in (
        'UPDATE llm_monthly_costs SET kind_breakdown = \'{"cache_read": {"tokens": 1, '
        '"cost_cents": 0, "uncached_cents": 1000000}}\'::jsonb',
        "INSERT INTO llm_monthly_costs (tenant_id, month, kind_breakdown) VALUES "
        f"('{tenant.tenant_id}', date_trunc('month', now())::date, '{{}}'::jsonb)",
    ):
        with pytest.raises(asyncpg.PostgresError):
            await app_conn.execute(sql)


async def test_app_role_cannot_rewrite_a_settled_breakdown(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """Refused when it passes: the breakdown of a settled call is immutable."""
    call_id = await pending_call(app_conn, tenant.tenant_id)
    honest = {"input": kind(1000, "0.015", "0.015"), "output": kind(10, "0.0006", "0.0006")}
    await app_conn.execute(SETTLE, call_id, Decimal("0.0156"), json.dumps(honest))
    forged = {"cache_read": kind(1000, "0.015", "0.15"), "output": kind(10, "0.0006", "0.0006")}
    with pytest.raises(asyncpg.PostgresError):
        await app_conn.execute(
            "UPDATE llm_api_calls SET usage_breakdown = $2::jsonb WHERE id = $1",
            call_id,
            json.dumps(forged),
        )


async def test_finance_and_costs_api_survive_a_forged_infinite_saving(
    app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    """BROKE: Whatever the app wrote, the month's kind breakdown holds only finite amounts."""
    call_id = await pending_call(app_conn, tenant.tenant_id)
    with contextlib.suppress(asyncpg.PostgresError):
        await app_conn.execute(
            SETTLE, call_id, Decimal("0.0156"), json.dumps(FORGED["uncached_infinity"])
        )
    bad = await owner_pool.fetchval(
        "SELECT count(*) FROM llm_monthly_costs m, jsonb_each(m.kind_breakdown) k "
        "WHERE m.tenant_id = $1 AND ((k.value ->> 'uncached_cents')::numeric "
        "IN ('Infinity'::numeric, 'NaN'::numeric))",
        tenant.tenant_id,
    )
    assert bad == 0


async def test_a_forged_nan_saving_cannot_break_the_reports(
    app_conn: asyncpg.Connection,
    tenant: CreatedTenant,
    api: httpx.AsyncClient,
) -> None:
    """BROKE: Whatever one tenant's session wrote, its costs report, its CSV and the finance report
    across every tenant still answer 200 with finite numbers (not a 500)."""
    call_id = await pending_call(app_conn, tenant.tenant_id)
    with_nan = {"input": kind(1000, "0.015", "NaN"), "output": kind(10, "0.0006", "0.0006")}
    try:
        await app_conn.execute(SETTLE, call_id, Decimal("0.0156"), json.dumps(with_nan))
    except asyncpg.PostgresError:
        return  # refused at the source: nothing can reach the reports
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    for url, headers in (
        ("/v1/costs/monthly", auth),
        ("/v1/costs/monthly?format=csv", auth),
        ("/v1/finance/monthly-costs", {"Authorization": f"Bearer {FINANCE_TOKEN}"}),
    ):
        response = await api.get(url, headers=headers)
        assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:200]}"
        assert "NaN" not in response.text, f"{url} reports NaN"
