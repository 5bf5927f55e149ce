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
# The phrases an analyst adds ("the week of 2026-10-12", "three weeks ago", "on 12 October",
# "in October", "the last two weeks"): `resolve_named`.
_NUMBERS = {"one": 1, "a": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}  # fmt: skip
_COUNT = r"(\d{1,2}|" + "|".join(_NUMBERS) + r")"
_WEEK_OF_ISO = re.compile(
    r"\bweek (?:of|starting|beginning|from) (?:monday )?(\d{4})-(\d{2})-(\d{2})\b"
)
_WEEKS_AGO = re.compile(rf"\b{_COUNT} weeks? ago\b")
_LAST_N_WEEKS = re.compile(rf"\b(?:last|past|previous) {_COUNT} weeks\b")
_LAST_N_DAYS_IN_WORDS = re.compile(rf"\b(?:last|past|previous) {_COUNT} days\b")
_PAST_WEEK = re.compile(r"\b(?:this )?(?:past|last) 7 days\b|\b(?:this )?past week\b")
_DAY_MONTH = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th)? ({MONTH_PATTERN})\b|\b({MONTH_PATTERN}) (\d{{1,2}})\b"
)
_IN_MONTH = re.compile(rf"\b(?:in|during|for|of) ({MONTH_PATTERN})\b(?! \d)")
# With the year: "12 October 2026", "October 12, 2026" (a day); "October 2026" (a month).
_DAY_MONTH_YEAR = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th)? ({MONTH_PATTERN}),? (\d{{4}})\b"
    rf"|\b({MONTH_PATTERN}) (\d{{1,2}})(?:st|nd|rd|th)?,? (\d{{4}})\b"
)
_MONTH_YEAR = re.compile(rf"\b({MONTH_PATTERN}),? (\d{{4}})\b")
_LAST_YEAR = re.compile(r"(?<!the )\b(?:last|previous) year\b|\bthe previous year\b")
_PAST_YEAR = re.compile(r"\bthe (?:last|past) (?:year|12 months)\b")  # rolling, not 2025
_THAN_LAST_YEAR = re.compile(
    r"\b(?:than|vs\.?|versus|compared (?:with|to)|against|from|since) (?:the )?"
    r"(?:last|previous) year\b"
)
_VERSUS = re.compile(r"\b(?:vs|versus|compared|against|than|relative to|with)\b")
_WEEK_LEAD = re.compile(r"\bweek (?:of|starting|beginning|from) (?:monday )?(?:the )?$")


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

    def is_calendar_year(self) -> bool:
        """Whether it is one whole calendar year (1 January to 1 January)."""
        return (self.start.month, self.start.day) == (1, 1) and self.end == date(
            self.start.year + 1, 1, 1
        )

    def comparable_before(self) -> Period:
        """What a change is measured against by default: the previous calendar month for a
        calendar month (October for November, as people read "last month"), the previous
        calendar year for a calendar year, otherwise the period of the same length just before
        (ValueError if before 1970)."""
        if self.is_calendar_year():
            if self.start.year - 1 < EARLIEST_DATE.year:
                raise ValueError(f"no calendar year between {EARLIEST_DATE} and {self.start}")
            return Period(date(self.start.year - 1, 1, 1), self.start)
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
    # "last year" is the calendar year before, unless it is what the period is compared with
    # ("lower than last year": the question's period is another one).
    if _PAST_YEAR.search(lowered):
        return Period(tomorrow - timedelta(days=365), tomorrow)
    if _names_last_year(lowered):
        return Period(date(today.year - 1, 1, 1), date(today.year, 1, 1))
    if "this year" in lowered:  # "this year vs last year": this year, compared with the last
        return Period(date(today.year, 1, 1), tomorrow)
    return Period(tomorrow - timedelta(days=default_days), tomorrow)


def _names_last_year(lowered: str) -> bool:
    """Whether "last year" is the period asked about, not what it is compared with."""
    return bool(_LAST_YEAR.search(lowered)) and not _THAN_LAST_YEAR.search(lowered)


def _next_month(day: date) -> date:
    """The 1st of the month after `day`'s."""
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def _up_to_today(period: Period, today: date) -> Period:
    """`period` cut at today when it has begun (no day to come is read as a day without data);
    a period wholly to come stays whole: it is named, and has no data yet."""
    if period.start > today:
        return period
    return Period(period.start, min(period.end, today + timedelta(days=1)))


def _count(text: str) -> int:
    """A count of weeks or days; zero is no count ("0 weeks ago" names no week: ValueError)."""
    count = int(text) if text.isdigit() else _NUMBERS[text]
    if count < 1:
        raise ValueError("a count of weeks or days is at least 1")
    return count


def resolve_named(text: str, today: date) -> tuple[Period, bool]:
    """The period a phrase (or a whole question) names, and whether it named one: False means
    the default window of `resolve_period`, which it falls back to for text it does not read."""
    lowered = text.lower()
    try:
        named = _analyst_phrase(lowered, today)
        if named is not None:  # a week of 1900 is no period the service reads either
            check_calendar(named.start, named.end)
    except (ValueError, OverflowError):
        named = None  # not a calendar day ("2026-13-01"), past year 9999, or a count of 0
        if _DAY_MONTH_YEAR.search(lowered) or _MONTH_YEAR.search(lowered):
            # A date with its year that names no period (to come, before 1970, not a day):
            # the same words without their year ("week of 12 October") name another year's.
            return resolve_period("", today), False
    if named is not None:
        return named, True
    period = resolve_period(lowered, today)
    # A phrase it recognises does not move when the default window does.
    return period, period == resolve_period(lowered, today, default_days=period.days + 1)


def _analyst_phrase(lowered: str, today: date) -> Period | None:
    """The phrases beyond `resolve_period`'s, or None."""
    tomorrow = today + timedelta(days=1)
    if m := _WEEK_OF_ISO.search(lowered):
        start = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return _up_to_today(Period(start, start + timedelta(days=7)), today)
    if m := _WEEKS_AGO.search(lowered):
        start = _monday(today) - timedelta(days=7 * _count(m.group(1)))
        return Period(start, start + timedelta(days=7))
    if m := _LAST_N_WEEKS.search(lowered):
        return Period(tomorrow - timedelta(days=7 * _count(m.group(1))), tomorrow)
    if _PAST_WEEK.search(lowered):
        return Period(tomorrow - timedelta(days=7), tomorrow)
    if (m := _LAST_N_DAYS_IN_WORDS.search(lowered)) and not m.group(1).isdigit():
        return Period(tomorrow - timedelta(days=_count(m.group(1))), tomorrow)
    if dated := _dated_phrase(lowered, today):
        return dated
    isos = _ISO.findall(lowered)
    if len(isos) == 1 and "week" not in lowered:  # "on 2026-10-14": that day
        day = date(int(isos[0][0]), int(isos[0][1]), int(isos[0][2]))
        return _up_to_today(Period(day, day + timedelta(days=1)), today)
    if "week of" not in lowered and not isos and (m := _DAY_MONTH.search(lowered)):
        day_text, month_text = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        month, day_no = MONTHS[month_text], int(day_text)
        try:
            on = date(_year_for(month, day_no, today), month, day_no)
        except ValueError:  # "31 February": not a day
            pass
        else:
            return Period(on, on + timedelta(days=1))
    if (m := _IN_MONTH.search(lowered)) and m.group(1) != "may":
        month = MONTHS[m.group(1)]
        year = today.year if month <= today.month else today.year - 1
        if _names_last_year(lowered):
            year = today.year - 1  # "in October last year", "last year in October"
        start = date(year, month, 1)
        return Period(start, min(_next_month(start), tomorrow))
    return None


def _dated_phrase(lowered: str, today: date) -> Period | None:
    """A day, a week or months named with their year, or None; ValueError for what such words
    leave unclear (two days, a day and a month, a week of a month)."""
    days = list(_DAY_MONTH_YEAR.finditer(lowered))
    in_days = [range(d.start(), d.end()) for d in days]
    months = [m for m in _MONTH_YEAR.finditer(lowered) if not any(m.start() in r for r in in_days)]
    if len(days) > 1 or (days and months):  # "1 October 2026 to 15 October 2026": ends unclear
        raise ValueError("two dates in words: give the range as ISO dates")
    if days:
        m = days[0]
        day_text, month_text, year_text = m.group(1, 2, 3) if m.group(1) else m.group(5, 4, 6)
        day = date(int(year_text), MONTHS[month_text], int(day_text))
        if _WEEK_LEAD.search(lowered, 0, m.start()):  # "the week of 12 October 2026"
            return _up_to_today(Period(day, day + timedelta(days=7)), today)
        return _up_to_today(Period(day, day + timedelta(days=1)), today)
    if not months:
        return None
    lead = lowered[: months[0].start()]
    if re.search(r"\bweek (?:of |in )?$", lead):  # "the first week of October 2025": not read
        raise ValueError("a week of a month: give the week's first day")
    first = date(int(months[0].group(2)), MONTHS[months[0].group(1)], 1)
    if re.search(r"\b(?:since|from) $", lead) and len(months) == 1:  # "since October 2025"
        return _up_to_today(Period(first, today + timedelta(days=1)), today)
    firsts = [date(int(m.group(2)), MONTHS[m.group(1)], 1) for m in months]
    between = lowered[months[0].end() : months[1].start()] if len(months) > 1 else ""
    if len(months) == 1 or _VERSUS.search(between) or re.search(r"\bcompar", lead):
        last = first  # "October 2026 vs September 2026": the first; the second is its comparison
    else:  # "October 2025 to March 2026", "October, November and December 2025": all of them
        first, last = min(firsts), max(firsts)
    return _up_to_today(Period(first, _next_month(last)), today)
