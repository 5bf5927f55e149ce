"""Exact percentages of integer amounts: Decimal with two places, rounded half-even, never float."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

PLACES = 2


def percent(part: int, whole: int) -> Decimal | None:
    """`part` as a percentage of `whole` (two places, half-even), or None when `whole` is 0."""
    if whole == 0:
        return None
    hundredths = round(Fraction(part * 100 * 10**PLACES, whole))  # exact, banker's rounding
    return Decimal(hundredths).scaleb(-PLACES)


def change_percent(current: int, previous: int) -> Decimal | None:
    """Relative change from `previous` to `current` in percent, or None when `previous` is 0."""
    return percent(current - previous, previous)
