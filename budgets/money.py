"""Exact money: USD as Decimal, conversion to the ledger's cents, parsing and display."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import (
    ROUND_CEILING,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Final, TypeAlias

USD: TypeAlias = Decimal
"""An amount of US dollars. Always a finite Decimal, never a float."""

CENTS_SCALE: Final = Decimal("1e-10")
"""The ledger's resolution: cents are stored as NUMERIC(20,10)."""

MAX_CENTS: Final = Decimal("1e10")
"""NUMERIC(20,10) holds at most 10 integer digits: amounts must stay below this many cents."""

ZERO: Final = Decimal(0)

# Additions and multiplications of prices and token counts are exact in 60 digits; trapping
# Inexact turns any silent rounding into an error instead of a wrong figure.
_EXACT: Final = Context(
    prec=60,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)


@contextmanager
def exact_arithmetic() -> Iterator[None]:
    """Run Decimal arithmetic with 60 digits and raise `decimal.Inexact` if anything would round."""
    with localcontext(_EXACT):
        yield


def _require_finite_non_negative(amount: Decimal, what: str) -> None:
    if not isinstance(amount, Decimal):
        raise TypeError(f"{what} must be a Decimal, not {type(amount).__name__}")
    if not amount.is_finite():
        raise ValueError(f"{what} must be a finite amount, got {amount}")
    if amount < 0:
        raise ValueError(f"{what} must not be negative, got {amount}")


def usd_to_cents(usd: USD) -> Decimal:
    """Convert USD to cents at the ledger's scale, rounding up so spend is never under-recorded."""
    _require_finite_non_negative(usd, "amount")
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.traps[Inexact] = False
        cents = usd.scaleb(2).quantize(CENTS_SCALE, rounding=ROUND_CEILING)
    if cents >= MAX_CENTS:
        raise ValueError(f"{usd} USD does not fit in NUMERIC(20,10) cents")
    return cents


def cents_to_usd(cents: Decimal) -> USD:
    """Convert cents (as stored in the ledger) to USD, exactly."""
    _require_finite_non_negative(cents, "cents")
    return cents.scaleb(-2)


def parse_usd(text: str) -> USD:
    """Parse a decimal USD amount such as "0.30"; refuse negatives, NaN, infinities and junk."""
    try:
        amount = Decimal(text.strip())
    except (InvalidOperation, AttributeError, TypeError) as exc:
        raise ValueError(f"not a USD amount: {text!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a finite USD amount: {text!r}")
    if amount < 0:
        raise ValueError(f"a USD amount must not be negative: {text!r}")
    return amount if amount != 0 else ZERO


def plain_usd(amount: USD) -> str:
    """An exact USD amount in its shortest fixed-point form: "0.00000015", "0.1", "20", "0".

    Never exponent notation ("1.5E-7", "0E-12"), which str() of a Decimal gives for small or
    zero amounts at the ledger's scale.
    """
    if not amount.is_finite():
        raise ValueError(f"cannot write {amount} as USD")
    with exact_arithmetic():
        normal = amount.normalize()
    return format(normal, "f") if normal != 0 else "0"


def format_usd(amount: USD, places: int = 4, rounding: str = ROUND_HALF_EVEN) -> str:
    """Format an amount as "$0.2140" with a fixed number of decimal places."""
    if not amount.is_finite():
        raise ValueError(f"cannot format {amount} as USD")
    with localcontext() as ctx:
        ctx.prec = 60
        q = amount.quantize(Decimal(1).scaleb(-places), rounding=rounding)
    sign = "-" if q < 0 else ""
    return f"{sign}${abs(q):.{places}f}"
