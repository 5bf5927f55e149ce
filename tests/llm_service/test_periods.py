"""Periods: the default comparison of a change (a calendar month's is the month before)."""

from __future__ import annotations

from datetime import date

import pytest

from llm_service.periods import Period, resolve_named


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


TODAY = date(2026, 12, 7)


@pytest.mark.parametrize(
    ("phrase", "start", "end"),
    [
        ("Why did revenue fall in October 2026?", date(2026, 10, 1), date(2026, 11, 1)),
        ("paid social, oct 2026", date(2026, 10, 1), date(2026, 11, 1)),
        ("May 2026", date(2026, 5, 1), date(2026, 6, 1)),  # with a year, not the verb
        ("December 2026", date(2026, 12, 1), date(2026, 12, 8)),  # up to today
        ("October 2025, week over week", date(2025, 10, 1), date(2025, 11, 1)),
        ("on 12 October 2025", date(2025, 10, 12), date(2025, 10, 13)),  # not the latest 12 Oct
        ("October 12th, 2026", date(2026, 10, 12), date(2026, 10, 13)),
        ("the week of 12 October 2025", date(2025, 10, 12), date(2025, 10, 19)),
        ("week starting the 5th October 2026", date(2026, 10, 5), date(2026, 10, 12)),
        ("from October 2025 to March 2026", date(2025, 10, 1), date(2026, 4, 1)),
        ("March 2026 to October 2025", date(2025, 10, 1), date(2026, 4, 1)),
        # The first is the period; the second its comparison, which is not a period to name.
        ("October 2026 vs September 2026", date(2026, 10, 1), date(2026, 11, 1)),
        ("October 2026 compared with May 2026", date(2026, 10, 1), date(2026, 11, 1)),
        ("November 2026 to December 2026", date(2026, 11, 1), date(2026, 12, 8)),
    ],
)
def test_a_month_or_day_with_its_year_names_that_month_or_day(
    phrase: str, start: date, end: date
) -> None:
    period, named = resolve_named(phrase, TODAY)
    assert named and (period.start, period.end) == (start, end)


@pytest.mark.parametrize(
    "phrase",
    [
        "December 1969",
        "March 2100",
        "on 31 April 2026",
        "from 1 October 2026 to 15 October 2026",  # are the ends in or out? ISO dates say
    ],
)
def test_a_month_or_day_outside_the_calendar_or_not_a_day_names_nothing(
    phrase: str,
) -> None:
    _period, named = resolve_named(phrase, TODAY)
    assert named is False


@pytest.mark.parametrize(
    ("phrase", "start", "end"),
    [
        ("January 2027", date(2027, 1, 1), date(2027, 2, 1)),
        ("on 8 December 2026", date(2026, 12, 8), date(2026, 12, 9)),
        ("on 2026-12-08", date(2026, 12, 8), date(2026, 12, 9)),
        ("the week of 2026-12-14", date(2026, 12, 14), date(2026, 12, 21)),
        # Begun: cut at today, as "this week" is.
        ("the week of 2026-12-07", date(2026, 12, 7), date(2026, 12, 8)),
        ("the week of 7 December 2026", date(2026, 12, 7), date(2026, 12, 8)),
    ],
)
def test_a_period_to_come_is_named_whole_and_one_begun_ends_today(
    phrase: str, start: date, end: date
) -> None:
    """A period asked about that is still to come is named (the answer then says it has no
    data), never swapped for the default window as if no period had been asked about."""
    period, named = resolve_named(phrase, TODAY)
    assert named and (period.start, period.end) == (start, end)


@pytest.mark.parametrize(
    ("phrase", "start", "end"),
    [
        ("How did revenue do last year?", date(2025, 1, 1), date(2026, 1, 1)),
        ("the previous year", date(2025, 1, 1), date(2026, 1, 1)),
        ("revenue this year", date(2026, 1, 1), date(2026, 12, 8)),
        ("this year vs last year", date(2026, 1, 1), date(2026, 12, 8)),
        ("in October last year", date(2025, 10, 1), date(2025, 11, 1)),
        ("in March of last year", date(2025, 3, 1), date(2025, 4, 1)),
        ("last year in October", date(2025, 10, 1), date(2025, 11, 1)),
        ("last year's revenue", date(2025, 1, 1), date(2026, 1, 1)),
        # "the last year" is the 365 days up to today, not the calendar year before.
        ("over the last year", date(2025, 12, 8), date(2026, 12, 8)),
        ("during the past 12 months", date(2025, 12, 8), date(2026, 12, 8)),
    ],
)
def test_last_year_and_this_year_are_calendar_years(phrase: str, start: date, end: date) -> None:
    period, named = resolve_named(phrase, TODAY)
    assert named and (period.start, period.end) == (start, end)


@pytest.mark.parametrize(
    "phrase", ["Why is revenue lower than last year?", "up 10% compared with last year"]
)
def test_last_year_as_the_comparison_is_not_the_period(phrase: str) -> None:
    assert resolve_named(phrase, TODAY)[1] is False


def test_a_calendar_year_is_compared_with_the_calendar_year_before() -> None:
    assert Period(date(2025, 1, 1), date(2026, 1, 1)).comparable_before() == Period(
        date(2024, 1, 1), date(2025, 1, 1)
    )  # 2024 has 366 days: not the 365 days just before
    with pytest.raises(ValueError, match="no calendar year"):
        Period(date(1970, 1, 1), date(1971, 1, 1)).comparable_before()
