"""Resolve date phrases to ABSOLUTE half-open UTC date ranges [start, end) before anything else."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

MONTHS: dict[str, int] = {
    name: i
    for i, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
         ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
         ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
         ("dec", "december")],
        start=1,
    )
    for name in names
}  # fmt: skip
MONTH_PATTERN = "|".join(sorted(MONTHS, key=len, reverse=True))
_WEEK_OF = re.compile(
    rf"\bweek of (\d{{1,2}})(?:st|nd|rd|th)? ({MONTH_PATTERN})\b"
    rf"|\bweek of ({MONTH_PATTERN}) (\d{{1,2}})\b"
)
_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_LAST_N_DAYS = re.compile(r"\b(?:last|past) (\d{1,3}) days\b")


#: Every period the service reads lies within [EARLIEST_DATE, LATEST_DATE]: attribution data from
#: before 1970 cannot exist, and the calendar's own edges (year 1, 9999-12-31) overflow the date
#: arithmetic of comparison periods and day boundaries.
EARLIEST_DATE = date(1970, 1, 1)
LATEST_DATE = date(2100, 1, 1)


def check_calendar(start: date, end: date, label: str = "period") -> None:
    """Raise ValueError unless the period lies between EARLIEST_DATE and LATEST_DATE."""
    if start < EARLIEST_DATE or end > LATEST_DATE or start > LATEST_DATE or end < EARLIEST_DATE:
        raise ValueError(
            f"the {label} must lie between {EARLIEST_DATE} and {LATEST_DATE} "
            f"({start} to {end} does not)"
        )


@dataclass(frozen=True)
class Period:
    """A half-open date range [start, end) in UTC."""

    start: date
    end: date

    @property
    def days(self) -> int:
        """Its length in days."""
        return (self.end - self.start).days

    def previous(self) -> Period:
        """The period of the same length just before this one (ValueError if before 1970)."""
        try:
            start = self.start - timedelta(days=self.days)
        except OverflowError:
            start = date.min
        if start < EARLIEST_DATE:
            raise ValueError(
                f"no period of {self.days} days between {EARLIEST_DATE} and {self.start} "
                "comes before it"
            )
        return Period(start, self.start)

    def is_calendar_month(self) -> bool:
        """Whether it is one whole calendar month (the 1st to the 1st of the next)."""
        return self.start.day == 1 and self.end == _next_month(self.start)

    def comparable_before(self) -> Period:
        """What a change is measured against by default: the previous calendar month for a
        calendar month (October for November, as people read "last month"), otherwise the
        period of the same length just before (ValueError if before 1970)."""
        if not self.is_calendar_month():
            return self.previous()
        start = _next_month(self.start - timedelta(days=32))  # the 1st of the month before
        if start < EARLIEST_DATE:
            raise ValueError(f"no calendar month between {EARLIEST_DATE} and {self.start}")
        return Period(start, self.start)

    def as_dict(self) -> dict[str, str]:
        """ISO dates, for prompts, cache scopes and tool arguments."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _year_for(month: int, day: int, today: date) -> int:
    # "10 November" means the most recent 10 November that is not in the future.
    candidate = date(today.year, month, day)
    return today.year if candidate <= today else today.year - 1


def resolve_period(text: str, today: date, *, default_days: int = 28) -> Period:
    """The period a phrase names, relative to `today` (which is included in 'this week')."""
    lowered = text.lower()
    tomorrow = today + timedelta(days=1)
    match = _WEEK_OF.search(lowered)
    if match:
        day_text, month_text = (
            (match.group(1), match.group(2)) if match.group(1) else (match.group(4), match.group(3))
        )
        month, day = MONTHS[month_text], int(day_text)
        try:
            start = date(_year_for(month, day, today), month, day)
        except ValueError:
            start = None
        if start is not None:
            return Period(start, start + timedelta(days=7))
    iso = _ISO.findall(lowered)
    if len(iso) >= 2:
        try:
            first, second = sorted(date(int(y), int(m), int(d)) for y, m, d in iso[:2])
        except ValueError:  # not calendar dates (2026-13-01, 0000-01-01): not a range
            pass
        else:
            if first < second:
                return Period(first, second)
    days = _LAST_N_DAYS.search(lowered)
    if days and 0 < int(days.group(1)) <= 366:
        return Period(tomorrow - timedelta(days=int(days.group(1))), tomorrow)
    if "yesterday" in lowered:
        return Period(today - timedelta(days=1), today)
    if "today" in lowered:
        return Period(today, tomorrow)
    if "last week" in lowered or "previous week" in lowered:
        start = _monday(today) - timedelta(days=7)
        return Period(start, start + timedelta(days=7))
    if "this week" in lowered:
        return Period(_monday(today), tomorrow)
    if "last month" in lowered or "previous month" in lowered:
        first_this = today.replace(day=1)
        first_last = (first_this - timedelta(days=1)).replace(day=1)
        return Period(first_last, first_this)
    if "this month" in lowered:
        return Period(today.replace(day=1), tomorrow)
    return Period(tomorrow - timedelta(days=default_days), tomorrow)


def _next_month(day: date) -> date:
    """The 1st of the month after `day`'s."""
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)
