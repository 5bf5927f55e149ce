"""Periods: the default comparison of a change (a calendar month's is the month before)."""

from __future__ import annotations

from datetime import date

import pytest

from llm_service.periods import Period


@pytest.mark.parametrize(
    ("start", "end", "before"),
    [
        (date(2026, 11, 1), date(2026, 12, 1), (date(2026, 10, 1), date(2026, 11, 1))),
        (date(2026, 3, 1), date(2026, 4, 1), (date(2026, 2, 1), date(2026, 3, 1))),  # 28 days
        (date(2024, 3, 1), date(2024, 4, 1), (date(2024, 2, 1), date(2024, 3, 1))),  # 29 days
        (date(2026, 1, 1), date(2026, 2, 1), (date(2025, 12, 1), date(2026, 1, 1))),
        (date(2026, 12, 1), date(2027, 1, 1), (date(2026, 11, 1), date(2026, 12, 1))),
        (date(1970, 2, 1), date(1970, 3, 1), (date(1970, 1, 1), date(1970, 2, 1))),
        # Not one calendar month: the same length just before.
        (date(2026, 11, 2), date(2026, 12, 2), (date(2026, 10, 3), date(2026, 11, 2))),
        (date(2026, 11, 1), date(2026, 11, 8), (date(2026, 10, 25), date(2026, 11, 1))),
        (date(2026, 10, 1), date(2026, 12, 1), (date(2026, 8, 1), date(2026, 10, 1))),
    ],
)
def test_a_change_is_measured_against_the_comparable_period_before(
    start: date, end: date, before: tuple[date, date]
) -> None:
    earlier = Period(start, end).comparable_before()
    assert (earlier.start, earlier.end) == before


def test_nothing_comes_before_the_calendars_first_month() -> None:
    with pytest.raises(ValueError, match="no calendar month"):
        Period(date(1970, 1, 1), date(1970, 2, 1)).comparable_before()
