"""Every billed kind of token: priced from the map, unknown kinds never free, worst case kept."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from budgets.ceiling import RunCeiling
from budgets.prices import ModelPrice, PriceBook
from budgets.usage import UsageBounds, UsageDetails, judge_usage
from llm_service.llm.litellm_setup import load_litellm

M = Decimal(1_000_000)
BOOK = PriceBook(model_cost=load_litellm().model_cost)
SONNET = BOOK.price_for("anthropic/claude-sonnet-4-5")
PRO = BOOK.price_for("gemini/gemini-2.5-pro")


def bounds(
    price: ModelPrice, input_tokens: int, max_tokens: int, cache_writes: bool
) -> UsageBounds:
    ceiling = RunCeiling(Decimal(10))
    held = ceiling.reserve(price, input_tokens, max_tokens, cache_writes=cache_writes)
    return held.bounds


def test_the_pinned_map_gives_every_cache_rate() -> None:
    mini = BOOK.price_for("openai/gpt-4o-mini")
    assert mini.kind_rate("cache_read", 10) * M == Decimal("0.075")
    assert mini.kind_rate("cache_write", 10) is None  # OpenAI does not bill cache writes
    assert SONNET.kind_rate("cache_read", 10) * M == Decimal("0.30")
    assert SONNET.kind_rate("cache_write", 10) * M == Decimal("3.75")
    flash = BOOK.price_for("gemini/gemini-2.5-flash")
    assert flash.kind_rate("cache_read", 10) * M == Decimal("0.03")
    assert flash.kind_rate("reasoning", 10) * M == Decimal("2.50")


def test_a_tiered_cache_rate_applies_above_its_threshold() -> None:
    assert PRO.kind_rate("cache_read", 199_999) * M == Decimal("0.125")
    assert PRO.kind_rate("cache_read", 200_000) * M == Decimal("0.25")
    assert PRO.kind_rate("input", 200_000) * M == Decimal("2.5")


def test_a_kind_without_a_price_is_billed_at_the_dearest_rate_and_flagged() -> None:
    # Sonnet has no audio input rate: its dearest known input rate is the cache-write rate.
    b = bounds(SONNET, 1000, 100, cache_writes=True)
    billed = judge_usage(SONNET, b, 1000, 100, UsageDetails(cache_read=600, input_audio=50))
    assert billed.anomaly is None
    assert billed.unpriced_kinds == ("input_audio",)
    expected = (350 * Decimal(3) + 600 * Decimal("0.30") + 50 * Decimal("3.75") + 100 * 15) / M
    assert billed.cost_usd == expected


def test_an_override_without_cache_rates_bills_cached_tokens_at_the_full_rate() -> None:
    book = PriceBook(overrides={"openai/my-model": (Decimal("1E-6"), Decimal("2E-6"))})
    price = book.price_for("openai/my-model")
    b = bounds(price, 2000, 10, cache_writes=False)
    billed = judge_usage(price, b, 2000, 10, UsageDetails(cache_read=1024))
    assert billed.cost_usd == (2000 * Decimal("1E-6") + 10 * Decimal("2E-6"))
    assert billed.unpriced_kinds == ("cache_read",)


def test_cache_writes_are_reserved_at_the_cache_write_rate() -> None:
    plain = bounds(SONNET, 1000, 100, cache_writes=False)
    marked = bounds(SONNET, 1000, 100, cache_writes=True)
    n = plain.input_tokens_reserved
    assert plain.reserved_usd == (n * Decimal(3) + 100 * 15) / M
    assert marked.reserved_usd == (n * Decimal("3.75") + 100 * 15) / M
    # The whole prompt written to the cache fits the marked reservation, not the plain one.
    everything = UsageDetails(cache_write=n)
    assert judge_usage(SONNET, marked, n, 100, everything).anomaly is None
    over = judge_usage(SONNET, plain, n, 100, everything)
    assert over.anomaly is not None and over.cost_usd == plain.reserved_usd


def test_parts_beyond_their_totals_are_billed_at_the_reservation() -> None:
    b = bounds(SONNET, 1000, 100, cache_writes=True)
    cached = judge_usage(SONNET, b, 100, 10, UsageDetails(cache_read=900))
    assert cached.anomaly is not None and cached.cost_usd == b.reserved_usd
    reasoning = judge_usage(SONNET, b, 100, 10, UsageDetails(reasoning=11))
    assert reasoning.anomaly is not None and reasoning.cost_usd == b.reserved_usd
    negative = judge_usage(SONNET, b, 100, 10, UsageDetails(cache_write=-1))
    assert negative.anomaly is not None
    text = judge_usage(SONNET, b, 100, 10, UsageDetails(cache_read="50"))
    assert text.anomaly is not None


@given(
    st.integers(0, 3000),
    st.integers(0, 3000),
    st.integers(0, 3000),
    st.integers(0, 500),
    st.booleans(),
)
def test_whatever_the_split_the_bill_never_passes_the_reservation(
    read: int, written: int, fresh: int, output: int, marked: bool
) -> None:
    b = bounds(SONNET, 2000, 400, cache_writes=marked)
    billed = judge_usage(
        SONNET,
        b,
        read + written + fresh,
        output,
        UsageDetails(cache_read=read, cache_write=written),
    )
    assert billed.cost_usd <= b.reserved_usd
    if billed.anomaly is None:
        assert sum(k.cost_usd for k in billed.kinds) == billed.cost_usd
        assert sum(k.tokens for k in billed.kinds) == read + written + fresh + output
