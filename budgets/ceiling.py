"""The per-run hard cost ceiling: reserve each call's worst case first, settle it from usage after.

What is guaranteed. Every reservation fits in what is left (`limit - spent - reserved`, minus the
wrap-up reserve for ordinary calls), so at all times `spent + reserved <= limit` as long as each
settled call costs no more than its reservation. A call costs no more than its reservation when

* the provider bills at most `max_tokens` output tokens (the gateway ALWAYS sends `max_tokens`;
  without it Anthropic allows 64,000 and OpenAI has no limit), and
* the provider's input count is at most ceil(estimate * (1 + margin)) where the margin for the
  model is max(the tokenizer margin, what was learned for it). The tokenizer margin is
  `max_input_undercount` (default 0.30, the worst under-count documented for litellm's
  approximate Claude/Gemini counts) for approximate tokenizers from the FIRST call, and
  `exact_tokenizer_margin` (default 0.02, message framing) for OpenAI models counted exactly.

Under those assumptions settled spend never exceeds the limit, and it does not when they are
broken either: usage outside a call's bounds (output above `max_tokens`, input above the margined
count, negative, non-integer) is billed at the call's reservation and flagged (budgets.usage),
so spent + reserved <= limit always holds. A plausible input under-count (up to
`MAX_LEARNABLE_RATIO` times the estimate) still raises the model's margin to the observed
under-count plus 0.05, so later reservations are safe.

Concurrency. One run is driven by one asyncio task, and several tool/LLM calls may reserve
concurrently within it. Every method is synchronous with no await inside, so under asyncio each
is atomic; a lock also makes them safe to call from threads.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from typing import Final

from budgets.estimate import (
    margined_input_tokens,
    max_tokens_affordable,
    worst_case_cost,
)
from budgets.money import USD, ZERO, exact_arithmetic, format_usd
from budgets.prices import ModelPrice
from budgets.usage import BilledUsage, UsageBounds, UsageDetails, judge_usage

DEFAULT_RUN_LIMIT: Final = Decimal("0.30")
"""The default and highest per-investigation ceiling, USD."""

DEFAULT_MAX_INPUT_UNDERCOUNT: Final = Decimal("0.30")
"""Starting input margin for approximate tokenizers: the worst documented under-count."""

DEFAULT_EXACT_TOKENIZER_MARGIN: Final = Decimal("0.02")
"""Starting input margin for exact (tiktoken) counts: covers message framing."""

LEARNING_HEADROOM: Final = Decimal("0.05")
"""Added to an observed under-count when the margin is raised."""

_MARGIN_STEP: Final = Decimal("0.0001")


class CeilingReached(Exception):
    """The next call cannot fit under the run's ceiling; `reason` says why in plain words."""

    def __init__(self, reason: str, *, needed_usd: USD, available_usd: USD) -> None:
        """Keep the reason and the figures behind it."""
        super().__init__(reason)
        self.reason = reason
        self.needed_usd = needed_usd
        self.available_usd = available_usd


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money held for one call until it is settled, released or counted as unknown."""

    id: int
    model: str
    input_tokens_estimate: int
    max_tokens: int
    amount_usd: USD
    input_tokens_reserved: int
    price: ModelPrice
    for_wrapup: bool = False
    cache_writes: bool = False

    @property
    def bounds(self) -> UsageBounds:
        """What the call this reservation is for could at most consume."""
        return UsageBounds(
            self.input_tokens_estimate, self.input_tokens_reserved, self.max_tokens, self.amount_usd
        )


class RunCeiling:
    """A hard per-run spend ceiling with worst-case reservations (see the module docstring)."""

    def __init__(
        self,
        limit: USD,
        *,
        wrapup_reserve: USD = ZERO,
        max_input_undercount: Decimal = DEFAULT_MAX_INPUT_UNDERCOUNT,
        exact_tokenizer_margin: Decimal = DEFAULT_EXACT_TOKENIZER_MARGIN,
    ) -> None:
        """A ceiling of `limit` USD, keeping `wrapup_reserve` back for one final wrap-up call."""
        _check_amount(limit, "limit")
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        _check_amount(max_input_undercount, "max_input_undercount")
        _check_amount(exact_tokenizer_margin, "exact_tokenizer_margin")
        self._limit = limit
        self._approx_margin = max_input_undercount
        self._exact_margin = exact_tokenizer_margin
        self._spent = ZERO
        self._overrun = ZERO
        self._wrapup_reserve = ZERO
        self._outstanding: dict[int, Reservation] = {}
        self._learned: dict[str, Decimal] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.set_wrapup_reserve(wrapup_reserve)

    # -- state -----------------------------------------------------------------------------

    @property
    def limit(self) -> USD:
        """The ceiling, USD."""
        return self._limit

    @property
    def spent(self) -> USD:
        """Settled spend (including calls whose outcome is unknown, at their worst case)."""
        return self._spent

    @property
    def reserved(self) -> USD:
        """The sum of outstanding reservations."""
        with exact_arithmetic():
            return sum((r.amount_usd for r in self._outstanding.values()), ZERO)

    @property
    def remaining(self) -> USD:
        """limit - spent - reserved (negative only after an overrun)."""
        with exact_arithmetic():
            return self._limit - self._spent - self.reserved

    @property
    def wrapup_reserve(self) -> USD:
        """The amount ordinary calls may not use, kept for the final wrap-up call."""
        return self._wrapup_reserve

    @property
    def overrun(self) -> USD:
        """Total by which settled calls cost more than they reserved: always 0, since usage
        outside a call's bounds is billed at its reservation (kept as a checkable invariant)."""
        return self._overrun

    @property
    def outstanding(self) -> int:
        """How many reservations are neither settled nor released."""
        return len(self._outstanding)

    def set_wrapup_reserve(self, amount: USD) -> None:
        """Change the wrap-up reserve (e.g. as the conversation a wrap-up must read grows)."""
        _check_amount(amount, "wrapup_reserve")
        if amount > self._limit:
            raise ValueError(f"wrapup_reserve {amount} exceeds the limit {self._limit}")
        with self._lock:
            self._wrapup_reserve = amount

    def margin_for(self, price: ModelPrice) -> Decimal:
        """The input margin used for this model now: the tokenizer's, or more if learned."""
        base = self._exact_margin if price.tokenizer_exact else self._approx_margin
        return max(base, self._learned.get(price.model, ZERO))

    def worst_case(
        self, price: ModelPrice, input_tokens: int, max_tokens: int, *, cache_writes: bool = False
    ) -> USD:
        """A call's worst case with this ceiling's current margin (e.g. to size the reserve)."""
        return worst_case_cost(
            price, input_tokens, max_tokens, self.margin_for(price), cache_writes=cache_writes
        )

    def available(self, *, for_wrapup: bool = False) -> USD:
        """What the next call may reserve: remaining, less the wrap-up reserve unless for_wrapup."""
        with exact_arithmetic():
            return self.remaining - (ZERO if for_wrapup else self._wrapup_reserve)

    # -- the call lifecycle ----------------------------------------------------------------

    def reserve(
        self,
        price: ModelPrice,
        input_tokens: int,
        wanted_max_tokens: int,
        *,
        min_output_tokens: int = 64,
        for_wrapup: bool = False,
        cache_writes: bool = False,
    ) -> Reservation:
        """Hold a call's worst case, shrinking max_tokens to fit; CeilingReached if too little fits.

        Refused when fewer than `min_output_tokens` (or the wanted count, if smaller) fit. The
        granted `max_tokens` is also capped at the model's `max_output_tokens`. `cache_writes`:
        the request may write the provider's prompt cache (priced at the cache-write rate).
        """
        cw = cache_writes
        if isinstance(wanted_max_tokens, bool) or wanted_max_tokens < 1:
            raise ValueError(f"wanted_max_tokens must be >= 1, got {wanted_max_tokens!r}")
        if isinstance(min_output_tokens, bool) or min_output_tokens < 1:
            raise ValueError(f"min_output_tokens must be >= 1, got {min_output_tokens!r}")
        with self._lock:
            margin = self.margin_for(price)
            available = self.available(for_wrapup=for_wrapup)
            cap = wanted_max_tokens
            if price.max_output_tokens is not None:
                cap = min(cap, price.max_output_tokens)
            floor_tokens = min(min_output_tokens, cap)
            granted = min(
                cap, max_tokens_affordable(price, input_tokens, margin, available, cache_writes=cw)
            )
            if granted < floor_tokens:
                needed = worst_case_cost(price, input_tokens, floor_tokens, margin, cache_writes=cw)
                raise CeilingReached(
                    self._refusal(price, needed, available, floor_tokens, for_wrapup),
                    needed_usd=needed,
                    available_usd=available,
                )
            amount = worst_case_cost(price, input_tokens, granted, margin, cache_writes=cw)
            if amount > available:  # cannot happen: max_tokens_affordable checked it exactly
                raise CeilingReached(
                    self._refusal(price, amount, available, granted, for_wrapup),
                    needed_usd=amount,
                    available_usd=available,
                )
            reservation = Reservation(
                id=next(self._ids),
                model=price.model,
                input_tokens_estimate=input_tokens,
                max_tokens=granted,
                amount_usd=amount,
                input_tokens_reserved=margined_input_tokens(input_tokens, margin),
                price=price,
                for_wrapup=for_wrapup,
                cache_writes=cw,
            )
            self._outstanding[reservation.id] = reservation
            return reservation

    def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int) -> USD:
        """Replace the reservation with the call's cost (returned): see `settle_reported`."""
        return self.settle_reported(reservation, input_tokens, output_tokens).cost_usd

    def settle_reported(
        self,
        reservation: Reservation,
        reported_input: object,
        reported_output: object,
        details: UsageDetails | None = None,
    ) -> BilledUsage:
        """Replace the reservation with what the call is billed at, judged from its usage.

        Usage within the call's bounds is billed as reported; anything else at the reservation
        (budgets.usage), so a settled call never costs more than it reserved. If the provider
        counted more input than was reserved (plausibly: a tokenizer miss), the model's margin
        is raised to the observed under-count plus 0.05 so the next estimate is safe.
        """
        billed = judge_usage(
            reservation.price, reservation.bounds, reported_input, reported_output, details
        )
        with self._lock:
            self._take(reservation)
            with exact_arithmetic():
                self._spent += billed.cost_usd
                if billed.cost_usd > reservation.amount_usd:
                    self._overrun += billed.cost_usd - reservation.amount_usd
            if billed.learnable_input_tokens is not None:
                self._learn(reservation, billed.learnable_input_tokens)
        return billed

    def release(self, reservation: Reservation) -> None:
        """Return the reservation of a call that was never sent."""
        with self._lock:
            self._take(reservation)

    def settle_unknown(self, reservation: Reservation) -> USD:
        """Count a call whose outcome is unknown (cancelled in flight) at its full worst case."""
        with self._lock:
            self._take(reservation)
            with exact_arithmetic():
                self._spent += reservation.amount_usd
        return reservation.amount_usd

    def remaining_for_prompt(self) -> str:
        """Remaining budget for the model to read, e.g. "$0.2140 of $0.30 left"."""
        left = max(self.remaining, ZERO)
        return f"{format_usd(left, 4, ROUND_FLOOR)} of {_format_limit(self._limit)} left"

    # -- internals -------------------------------------------------------------------------

    def _take(self, reservation: Reservation) -> None:
        if self._outstanding.pop(reservation.id, None) is None:
            raise ValueError(
                f"reservation {reservation.id} is not outstanding (already settled or released)"
            )

    def _learn(self, reservation: Reservation, input_tokens: int) -> None:
        estimate = max(reservation.input_tokens_estimate, 1)
        with localcontext() as ctx:
            ctx.prec = 60
            ratio = Decimal(input_tokens) / Decimal(estimate)
            wanted = (ratio - 1 + LEARNING_HEADROOM).quantize(_MARGIN_STEP, rounding=ROUND_CEILING)
        current = self._learned.get(reservation.model, ZERO)
        self._learned[reservation.model] = max(current, wanted)

    def _refusal(
        self, price: ModelPrice, needed: USD, available: USD, tokens: int, for_wrapup: bool
    ) -> str:
        left = format_usd(max(available, ZERO), 4, ROUND_FLOOR)
        reason = (
            f"next call to {price.model} needs at least {format_usd(needed, 4, ROUND_CEILING)} "
            f"({tokens} output tokens at most), {left} left of the "
            f"{_format_limit(self._limit)} ceiling"
        )
        if not for_wrapup and self._wrapup_reserve > 0:
            reason += f" ({format_usd(self._wrapup_reserve, 4)} kept back for the wrap-up answer)"
        return reason


def _check_amount(value: Decimal, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Decimal):
        raise TypeError(f"{what} must be a Decimal, not {type(value).__name__}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what} must be a finite, non-negative Decimal, got {value}")


def _format_limit(limit: USD) -> str:
    places = 2 if limit == limit.quantize(Decimal("0.01"), rounding=ROUND_FLOOR) else 4
    return format_usd(limit, places, ROUND_FLOOR)
