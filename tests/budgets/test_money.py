"""Exact USD/cents conversion, parsing and formatting."""

from __future__ import annotations

from decimal import Decimal, Inexact

import pytest

from budgets.money import (
    CENTS_SCALE,
    cents_to_usd,
    exact_arithmetic,
    format_usd,
    parse_usd,
    plain_usd,
    usd_to_cents,
)


def test_cents_scale_is_numeric_20_10() -> None:
    assert CENTS_SCALE.as_tuple() == Decimal("0.0000000001").as_tuple()


def test_usd_to_cents_is_exact_at_ledger_scale() -> None:
    assert usd_to_cents(Decimal("1.5E-7")) == Decimal("0.0000150000")
    assert usd_to_cents(Decimal("0.30")) == Decimal("30.0000000000")
    assert usd_to_cents(Decimal(0)) == Decimal("0E-10")


def test_plain_usd_never_writes_an_exponent() -> None:
    # str() of these Decimals is "0E-12", "1.5E-7", "0.300000000000", "2E+1".
    assert plain_usd(cents_to_usd(Decimal("0E-10"))) == "0"
    assert plain_usd(cents_to_usd(Decimal("0.0000150000"))) == "0.00000015"
    assert plain_usd(cents_to_usd(Decimal("30.0000000000"))) == "0.3"
    assert plain_usd(Decimal("2E+1")) == "20"
    with pytest.raises(ValueError):
        plain_usd(Decimal("NaN"))


def test_usd_to_cents_rounds_up_never_under_records() -> None:
    # 1.23E-13 USD = 1.23E-11 cents: below the ledger's resolution, recorded as one unit.
    assert usd_to_cents(Decimal("1.23E-13")) == Decimal("1E-10")
    assert usd_to_cents(Decimal("0.000000000001000001")) == Decimal("2E-10")


def test_usd_to_cents_refuses_what_the_column_cannot_hold() -> None:
    with pytest.raises(ValueError):
        usd_to_cents(Decimal("100000000"))  # 1e10 cents: 11 integer digits
    with pytest.raises(ValueError):
        usd_to_cents(Decimal("-0.01"))
    with pytest.raises(ValueError):
        usd_to_cents(Decimal("NaN"))
    with pytest.raises(TypeError):
        usd_to_cents(0.1)  # type: ignore[arg-type]


def test_cents_round_trip() -> None:
    for text in ["0", "0.30", "1.5E-7", "12.3456789012"]:
        usd = Decimal(text)
        assert cents_to_usd(usd_to_cents(usd)) == usd


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.30", Decimal("0.30")), (" 1 ", Decimal(1)), ("1.5e-7", Decimal("1.5E-7")), ("-0", 0)],
)
def test_parse_usd_accepts_plain_amounts(text: str, expected: Decimal) -> None:
    assert parse_usd(text) == expected


@pytest.mark.parametrize("text", ["-0.01", "NaN", "sNaN", "inf", "-Infinity", "", "abc", "0,30"])
def test_parse_usd_refuses_negative_non_finite_and_junk(text: str) -> None:
    with pytest.raises(ValueError):
        parse_usd(text)


def test_format_usd() -> None:
    assert format_usd(Decimal("0.214")) == "$0.2140"
    assert format_usd(Decimal("0.3"), 2) == "$0.30"
    assert format_usd(Decimal("-0.5"), 2) == "-$0.50"


def test_exact_arithmetic_refuses_to_round() -> None:
    with exact_arithmetic():
        assert Decimal("1.5E-7") * 123456 == Decimal("0.0185184")
        with pytest.raises(Inexact):
            _ = Decimal(1) / Decimal(3)
