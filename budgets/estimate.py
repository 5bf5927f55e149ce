"""Cost arithmetic for one call: worst case before it, actual cost after it, what still fits."""

from __future__ import annotations

import sys
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from typing import Final

from budgets.money import USD, exact_arithmetic
from budgets.prices import ModelPrice

UNBOUNDED_TOKENS: Final = sys.maxsize
"""What `max_tokens_affordable` returns when output is free and the input fits."""


def _check_tokens(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative int, got {value!r}")


def _check_margin(margin: Decimal) -> None:
    if not isinstance(margin, Decimal) or not margin.is_finite() or margin < 0:
        raise ValueError(f"input margin must be a finite, non-negative Decimal, got {margin!r}")


def margined_input_tokens(input_tokens: int, input_margin: Decimal) -> int:
    """ceil(input_tokens * (1 + margin)): the input count a worst case is priced at."""
    _check_tokens(input_tokens, "input_tokens")
    _check_margin(input_margin)
    with exact_arithmetic():
        scaled = Decimal(input_tokens) * (1 + input_margin)
    return int(scaled.to_integral_value(rounding=ROUND_CEILING))


def worst_case_cost(
    price: ModelPrice,
    input_tokens: int,
    max_tokens: int,
    input_margin: Decimal,
    *,
    cache_writes: bool = False,
) -> USD:
    """ceil(input_tokens * (1 + margin)) * input price + max_tokens * output price, exactly.

    No cache hit is assumed; with `cache_writes` every input token may be written to the cache,
    so the input price is the dearer of the base and cache-write rates (prices.reservation_rates).
    """
    _check_tokens(max_tokens, "max_tokens")
    billed_in = margined_input_tokens(input_tokens, input_margin)
    rate_in, rate_out = price.reservation_rates(billed_in, cache_writes=cache_writes)
    with exact_arithmetic():
        return Decimal(billed_in) * rate_in + Decimal(max_tokens) * rate_out


def actual_cost(price: ModelPrice, input_tokens: int, output_tokens: int) -> USD:
    """What a call costs from the usage the provider reported, exactly."""
    _check_tokens(input_tokens, "input_tokens")
    _check_tokens(output_tokens, "output_tokens")
    rate_in, rate_out = price.rates_for(input_tokens, billed=True)
    with exact_arithmetic():
        return Decimal(input_tokens) * rate_in + Decimal(output_tokens) * rate_out


def max_tokens_affordable(
    price: ModelPrice,
    input_tokens: int,
    input_margin: Decimal,
    available_usd: USD,
    *,
    cache_writes: bool = False,
) -> int:
    """The largest max_tokens whose worst case fits in `available_usd`; -1 if the input cannot.

    Returns `UNBOUNDED_TOKENS` when output is free and the input fits.
    """
    if not isinstance(available_usd, Decimal) or not available_usd.is_finite():
        raise ValueError(f"available_usd must be a finite Decimal, got {available_usd!r}")
    billed_in = margined_input_tokens(input_tokens, input_margin)
    rate_in, rate_out = price.reservation_rates(billed_in, cache_writes=cache_writes)
    with exact_arithmetic():
        rest = available_usd - Decimal(billed_in) * rate_in
    if rest < 0:
        return -1
    if rate_out == 0:
        return UNBOUNDED_TOKENS
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.rounding = ROUND_FLOOR  # a rounded-down quotient has the same floor as the exact one
        tokens = int((rest / rate_out).to_integral_value(rounding=ROUND_FLOOR))
    # Belt and braces: the answer is checked with exact multiplication.
    while (
        tokens > 0
        and worst_case_cost(price, input_tokens, tokens, input_margin, cache_writes=cache_writes)
        > available_usd
    ):
        tokens -= 1
    return tokens
