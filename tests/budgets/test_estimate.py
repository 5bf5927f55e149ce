"""Worst case before a call, actual cost after it, and what still fits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from budgets.estimate import (
    UNBOUNDED_TOKENS,
    actual_cost,
    margined_input_tokens,
    max_tokens_affordable,
    worst_case_cost,
)
from budgets.prices import ModelPrice, PriceTier

MINI = ModelPrice(
    model="gpt-4o-mini",
    input_per_token=Decimal("1.5E-7"),
    output_per_token=Decimal("6E-7"),
    provider="openai",
    max_output_tokens=16384,
    tokenizer_exact=True,
)
TIERED = ModelPrice(
    model="gemini/gemini-2.5-pro",
    input_per_token=Decimal("1.25E-6"),
    output_per_token=Decimal("0.00001"),
    provider="gemini",
    max_output_tokens=65536,
    tokenizer_exact=False,
    tiers=(PriceTier(200_000, Decimal("2.5E-6"), Decimal("0.000015")),),
)


def test_margined_input_rounds_up() -> None:
    assert margined_input_tokens(1000, Decimal(0)) == 1000
    assert margined_input_tokens(1000, Decimal("0.15")) == 1150
    assert margined_input_tokens(10, Decimal("0.02")) == 11
    assert margined_input_tokens(0, Decimal("0.30")) == 0


def test_worst_case_cost_formula() -> None:
    # ceil(1000 * 1.15) = 1150 input tokens + 500 output tokens.
    expected = 1150 * Decimal("1.5E-7") + 500 * Decimal("6E-7")
    assert worst_case_cost(MINI, 1000, 500, Decimal("0.15")) == expected
    assert worst_case_cost(MINI, 1000, 500, Decimal("0.15")) == Decimal("0.0004725")


def test_actual_cost_is_exact() -> None:
    assert actual_cost(MINI, 1, 0) == Decimal("1.5E-7")
    assert actual_cost(MINI, 1_000_000, 1_000_000) == Decimal("0.75")
    assert actual_cost(MINI, 0, 0) == 0


def test_tiered_price_applies_to_the_whole_prompt_above_the_threshold() -> None:
    # As billed ("above 200k tokens"): exactly 200,000 is still the base rate.
    assert actual_cost(TIERED, 200_000, 10) == 200_000 * Decimal("1.25E-6") + 10 * Decimal(
        "0.00001"
    )
    assert actual_cost(TIERED, 200_001, 10) == 200_001 * Decimal("2.5E-6") + 10 * Decimal(
        "0.000015"
    )
    # The worst case prices the margined count: 180,000 * 1.2 crosses the threshold.
    assert worst_case_cost(TIERED, 180_000, 0, Decimal("0.2")) == 216_000 * Decimal("2.5E-6")


def test_max_tokens_affordable_is_the_exact_floor() -> None:
    available = Decimal("0.001")
    n = max_tokens_affordable(MINI, 1000, Decimal("0.15"), available)
    assert worst_case_cost(MINI, 1000, n, Decimal("0.15")) <= available
    assert worst_case_cost(MINI, 1000, n + 1, Decimal("0.15")) > available
    # (0.001 - 1150 * 1.5e-7) / 6e-7 = 1379.58...
    assert n == 1379


def test_max_tokens_affordable_when_the_input_alone_does_not_fit() -> None:
    assert max_tokens_affordable(MINI, 10_000, Decimal(0), Decimal("0.0001")) == -1
    assert max_tokens_affordable(MINI, 10_000, Decimal(0), Decimal("0.0015")) == 0


def test_max_tokens_affordable_with_free_output() -> None:
    embed = ModelPrice("e", Decimal("2E-8"), Decimal(0), "openai", None, True)
    assert max_tokens_affordable(embed, 100, Decimal(0), Decimal(1)) == UNBOUNDED_TOKENS


@pytest.mark.parametrize("bad", [-1, True])
def test_token_counts_are_validated(bad: int) -> None:
    with pytest.raises(ValueError):
        actual_cost(MINI, bad, 0)


def test_margin_is_validated() -> None:
    with pytest.raises(ValueError):
        worst_case_cost(MINI, 1, 1, Decimal("-0.1"))
