"""Deterministic budget allocation: water-fill whole cents in proportion to efficiency, in bounds.

The rule, exactly:

1. Every channel has a weight (its efficiency, a non-negative rational), a minimum (default 0)
   and an optional maximum, all in whole cents. The minima must fit in the total.
2. If every channel has a maximum and the maxima add up to no more than the total, the bounds
   make the total unreachable: every channel gets its maximum and the rest is reported as
   unallocated.
3. Otherwise the exact (rational) allocation is x_i = clamp(lambda * w_i, min_i, max_i) with the
   x_i adding up to the total. It is found by water-filling: share what is left among the free
   channels in proportion to their weights; if that breaks bounds, fix the violators whose side
   the overall correction points to (at their minimum if clamping would add money, at their
   maximum if it would take money away, both if it balances), and share again. Each round fixes
   at least one channel, and every fix agrees with the final solution.
   Channels with no weight get their minimum while any weighted channel can take the money; once
   every weighted channel is at its maximum, what remains is shared equally among them.
4. Whole cents: each free channel gets the floor of its exact share, and the cents left over go
   one each to the largest fractional parts, ties broken by channel code. Fixed channels sit on
   integer bounds, so the result adds up to the total exactly and stays within every bound.

Higher weight never gets fewer cents than lower weight when no bound binds, and the result does
not depend on the order the channels are given in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from math import floor
from typing import Literal

Weight = Fraction | Decimal | int
Bound = Literal["min", "max"]


@dataclass(frozen=True)
class ChannelInput:
    """One channel to allocate to: its efficiency weight and its bounds in whole cents."""

    code: str
    weight: Weight
    min_cents: int = 0
    max_cents: int | None = None


@dataclass(frozen=True)
class Allocation:
    """The proposal: whole cents per channel (by code), what could not be placed, binding bounds."""

    total_cents: int
    amounts: dict[str, int]
    unallocated_cents: int
    binding: dict[str, Bound] = field(default_factory=dict)

    @property
    def allocated_cents(self) -> int:
        """The sum of the proposed amounts."""
        return sum(self.amounts.values())

    @property
    def feasible(self) -> bool:
        """Whether the whole total could be placed within the bounds."""
        return self.unallocated_cents == 0


def _as_fraction(weight: Weight, code: str) -> Fraction:
    if isinstance(weight, bool) or not isinstance(weight, Fraction | Decimal | int):
        raise TypeError(f"weight of {code} must be a Fraction, Decimal or int, not {weight!r}")
    if isinstance(weight, Decimal) and not weight.is_finite():
        raise ValueError(f"weight of {code} must be finite, got {weight}")
    value = Fraction(weight)
    if value < 0:
        raise ValueError(f"weight of {code} must not be negative, got {weight}")
    return value


def _validate(total_cents: int, channels: Sequence[ChannelInput]) -> None:
    if isinstance(total_cents, bool) or not isinstance(total_cents, int) or total_cents < 0:
        raise ValueError(f"total_cents must be a non-negative int, got {total_cents!r}")
    codes = [c.code for c in channels]
    if len(set(codes)) != len(codes):
        raise ValueError("channel codes must be unique")
    for c in channels:
        if isinstance(c.min_cents, bool) or not isinstance(c.min_cents, int) or c.min_cents < 0:
            raise ValueError(f"min_cents of {c.code} must be a non-negative int")
        if c.max_cents is not None and (
            isinstance(c.max_cents, bool)
            or not isinstance(c.max_cents, int)
            or c.max_cents < c.min_cents
        ):
            raise ValueError(f"max_cents of {c.code} must be an int no less than its min_cents")
    minimum = sum(c.min_cents for c in channels)
    if minimum > total_cents:
        raise ValueError(f"the minimum bounds ({minimum} cents) exceed the total ({total_cents})")


def _water_fill(
    total_cents: int, channels: list[ChannelInput], weights: dict[str, Fraction]
) -> tuple[dict[str, Fraction], dict[str, Bound]]:
    """The exact rational allocation and the bounds that bind in it."""
    fixed: dict[str, Fraction] = {}
    binding: dict[str, Bound] = {}
    free = list(channels)
    while free:
        remaining = total_cents - sum(fixed.values(), Fraction(0))
        share = {c.code: weights[c.code] for c in free}
        total_weight = sum(share.values(), Fraction(0))
        if total_weight == 0:  # only unweighted channels are left: share equally
            share = {c.code: Fraction(1) for c in free}
            total_weight = Fraction(len(free))
        ideal = {c.code: remaining * share[c.code] / total_weight for c in free}
        low = [c for c in free if ideal[c.code] < c.min_cents]
        high = [c for c in free if c.max_cents is not None and ideal[c.code] > c.max_cents]
        if not low and not high:
            return {**fixed, **ideal}, binding
        added = sum((c.min_cents - ideal[c.code] for c in low), Fraction(0))
        taken = sum((ideal[c.code] - (c.max_cents or 0) for c in high), Fraction(0))
        if added > taken:
            chosen = [(c, "min") for c in low]
        elif added < taken:
            chosen = [(c, "max") for c in high]
        else:
            chosen = [(c, "min") for c in low] + [(c, "max") for c in high]
        for channel, side in chosen:
            bound = channel.min_cents if side == "min" else channel.max_cents
            assert bound is not None
            fixed[channel.code] = Fraction(bound)
            binding[channel.code] = "min" if side == "min" else "max"
        done = set(fixed)
        free = [c for c in free if c.code not in done]
    return fixed, binding


def _whole_cents(total_cents: int, exact: dict[str, Fraction]) -> dict[str, int]:
    """Floors plus the leftover cents by largest fractional part (ties by code)."""
    floors = {code: floor(value) for code, value in exact.items()}
    left = total_cents - sum(floors.values())
    order = sorted(exact, key=lambda code: (-(exact[code] - floors[code]), code))
    assert 0 <= left <= len(order), "rounding left more cents than channels"
    for code in order[:left]:
        floors[code] += 1
    return floors


def allocate(total_cents: int, channels: Sequence[ChannelInput]) -> Allocation:
    """Split `total_cents` across `channels` in proportion to weight, within bounds (see module)."""
    _validate(total_cents, channels)
    ordered = sorted(channels, key=lambda c: c.code)
    weights = {c.code: _as_fraction(c.weight, c.code) for c in ordered}
    maxima = [c.max_cents for c in ordered]
    if all(m is not None for m in maxima):
        ceiling = sum(m for m in maxima if m is not None)
        if ceiling <= total_cents:
            amounts = {c.code: c.max_cents for c in ordered if c.max_cents is not None}
            return Allocation(
                total_cents, amounts, total_cents - ceiling, {c.code: "max" for c in ordered}
            )
    exact, binding = _water_fill(total_cents, ordered, weights)
    amounts = _whole_cents(total_cents, exact)
    result = Allocation(
        total_cents, {c.code: amounts[c.code] for c in ordered}, 0, dict(sorted(binding.items()))
    )
    assert result.allocated_cents == total_cents
    return result
