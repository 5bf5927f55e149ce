"""Usage is evidence, not truth: what a provider reports is believed only where it is possible.

A call was granted `max_tokens` output tokens and its input was counted (with a margin) before
it was sent; the provider's usage report is believed when it lies within those bounds, so its
cost can never pass the call's reservation. A report outside them (output above `max_tokens`,
input above the margined count, negative, non-integer, missing) is an anomaly: the call is billed
at its reservation (what it could at most have cost), and the reason is kept beside the raw
report.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from budgets.estimate import actual_cost
from budgets.prices import ModelPrice

MAX_LEARNABLE_RATIO: Final = 4
"""An input count above this multiple of the estimate is not learned from: it is not a tokenizer
miss but a lie, and learning it would make every later reservation absurd."""


@dataclass(frozen=True, slots=True)
class UsageBounds:
    """What one call could physically consume: its margined input count and granted output."""

    input_tokens_estimate: int
    input_tokens_reserved: int
    max_tokens: int
    reserved_usd: Decimal


@dataclass(frozen=True, slots=True)
class BilledUsage:
    """What a call is billed at, and why if not as the provider reported it."""

    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    anomaly: str | None = None
    learnable_input_tokens: int | None = None


def _token_count(value: object) -> int | None:
    """`value` as a token count if it is one (a non-negative int, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def judge_usage(
    price: ModelPrice, bounds: UsageBounds, reported_input: object, reported_output: object
) -> BilledUsage:
    """Bill a call from its reported usage if that is possible, else at its reservation."""
    input_tokens = _token_count(reported_input)
    output_tokens = _token_count(reported_output)
    if input_tokens is None or output_tokens is None:
        return _at_reservation(
            bounds,
            f"usage is not a pair of non-negative integers "
            f"(input {_shown(reported_input)}, output {_shown(reported_output)})",
        )
    learnable = (
        input_tokens
        if bounds.input_tokens_reserved
        < input_tokens
        <= MAX_LEARNABLE_RATIO * max(bounds.input_tokens_estimate, 1)
        else None
    )
    if output_tokens > bounds.max_tokens:
        return _at_reservation(
            bounds,
            f"output {output_tokens} tokens is above the {bounds.max_tokens} granted",
            learnable,
        )
    if input_tokens > bounds.input_tokens_reserved:
        return _at_reservation(
            bounds,
            f"input {input_tokens} tokens is above the {bounds.input_tokens_reserved} counted "
            f"with its margin (estimate {bounds.input_tokens_estimate})",
            learnable,
        )
    cost = actual_cost(price, input_tokens, output_tokens)
    if cost > bounds.reserved_usd:  # impossible for monotone prices; kept as a guard
        return _at_reservation(bounds, f"cost {cost} is above the reservation", learnable)
    return BilledUsage(input_tokens, output_tokens, cost)


def missing_usage() -> str:
    """The anomaly of a reply that reported no usage at all."""
    return "the provider reported no usage"


def _at_reservation(bounds: UsageBounds, why: str, learnable: int | None = None) -> BilledUsage:
    return BilledUsage(
        bounds.input_tokens_reserved,
        bounds.max_tokens,
        bounds.reserved_usd,
        anomaly=why,
        learnable_input_tokens=learnable,
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
