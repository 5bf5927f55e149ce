"""Usage is evidence, not truth: what a provider reports is believed only where it is possible.

A call was granted `max_tokens` output tokens and its input was counted (with a margin) before
it was sent; the provider's usage report is believed when it lies within those bounds, so its
cost can never pass the call's reservation. A report outside them (output above `max_tokens`,
input above the margined count, negative, non-integer, missing) is an anomaly: the call is billed
at its reservation (what it could at most have cost), and the reason is kept beside the raw
report.

Priced as billed: the input count includes cached reads and cache writes (and audio), which are
billed at their own rates, and the rest at the base rate; the output count includes reasoning and
audio tokens. Every kind's tokens and cost are kept (`KindCost`) for the ledger's breakdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from budgets.money import exact_arithmetic
from budgets.prices import INPUT_KINDS, OUTPUT_KINDS, ModelPrice

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
class UsageDetails:
    """Parts of the reported counts billed at their own rates (each within its total)."""

    cache_read: object = 0
    cache_write: object = 0
    input_audio: object = 0
    reasoning: object = 0
    output_audio: object = 0


@dataclass(frozen=True, slots=True)
class KindCost:
    """One kind of token of a call: how many, at what rate, what they cost, and what they would
    have cost uncached (at the base rate of their direction; the difference is what caching saved).
    `rate_known` is False when the map had no rate and the dearest known one was charged."""

    kind: str
    tokens: int
    rate_usd: Decimal
    cost_usd: Decimal
    uncached_usd: Decimal
    rate_known: bool = True


@dataclass(frozen=True, slots=True)
class BilledUsage:
    """What a call is billed at, and why if not as the provider reported it."""

    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    anomaly: str | None = None
    learnable_input_tokens: int | None = None
    kinds: tuple[KindCost, ...] = ()

    @property
    def unpriced_kinds(self) -> tuple[str, ...]:
        """Kinds billed at the dearest known rate because the map had no rate for them."""
        return tuple(k.kind for k in self.kinds if not k.rate_known and k.tokens)


def _token_count(value: object) -> int | None:
    """`value` as a token count if it is one (a non-negative int, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def judge_usage(
    price: ModelPrice,
    bounds: UsageBounds,
    reported_input: object,
    reported_output: object,
    details: UsageDetails | None = None,
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
    parts: dict[str, int] = {}
    for kind in (*INPUT_KINDS[1:], *OUTPUT_KINDS[1:]):
        value = getattr(details, kind) if details is not None else 0
        count = _token_count(0 if value is None else value)
        if count is None:
            return _at_reservation(bounds, f"{kind} tokens {_shown(value)} is not a token count")
        parts[kind] = count
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
    input_parts = sum(parts[k] for k in INPUT_KINDS[1:])
    output_parts = sum(parts[k] for k in OUTPUT_KINDS[1:])
    if input_parts > input_tokens or output_parts > output_tokens:
        return _at_reservation(
            bounds,
            f"the parts of the usage ({_parts_text(parts)}) exceed its totals "
            f"(input {input_tokens}, output {output_tokens})",
        )
    parts["input"] = input_tokens - input_parts
    parts["output"] = output_tokens - output_parts
    kinds = price_kinds(price, input_tokens, parts)
    with exact_arithmetic():
        cost = sum((k.cost_usd for k in kinds), Decimal(0))
    if cost > bounds.reserved_usd:  # e.g. an unpriced kind at the dearest rate; kept as a guard
        return _at_reservation(bounds, f"cost {cost} is above the reservation", learnable)
    return BilledUsage(input_tokens, output_tokens, cost, kinds=kinds)


def price_kinds(
    price: ModelPrice, prompt_tokens: int, parts: dict[str, int]
) -> tuple[KindCost, ...]:
    """Each kind's cost at its rate for a prompt of `prompt_tokens` (all input kinds together);
    a kind without a rate is charged the dearest known rate of its direction, flagged."""
    out: list[KindCost] = []
    for kinds, direction in ((INPUT_KINDS, "input"), (OUTPUT_KINDS, "output")):
        base = price.kind_rate(direction, prompt_tokens, billed=True)
        assert base is not None
        for kind in kinds:
            tokens = parts.get(kind, 0)
            if not tokens:
                continue
            rate = price.kind_rate(kind, prompt_tokens, billed=True)
            known = rate is not None
            if rate is None:
                rate = price.dearest_rate(direction, prompt_tokens, billed=True)
            with exact_arithmetic():
                cost = Decimal(tokens) * rate
                uncached = Decimal(tokens) * base if kind.startswith("cache_") else cost
            out.append(KindCost(kind, tokens, rate, cost, uncached, known))
    return tuple(out)


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


def _parts_text(parts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in parts.items() if count) or "none"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
