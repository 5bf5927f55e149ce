"""From a validated request to the absolute query the cache scope is made of.

Relative phrases ("last week") are resolved to dates first, so nothing after this ever sees
anything but absolute dates. A phrase `periods.resolve_named` does not recognise is refused (422)
rather than silently read as its default window. Channel codes are checked against the
taxonomy, remembered in-process: it is global reference data, changed by migrations only.
"""

from __future__ import annotations

import time
from datetime import date

import asyncpg

from llm_service.channels.repository import known_channels
from llm_service.errors import InvalidRequest
from llm_service.explanations.data import ExplanationQuery
from llm_service.explanations.schemas import (
    DEFAULT_ATTRIBUTION_MODEL,
    MODEL_SUBJECTS,
    SUBJECT_METRICS,
    DateRange,
    ExplanationRequest,
)
from llm_service.periods import Period, check_calendar, resolve_named
from llm_service.tools.args import MAX_PERIOD_DAYS

_PHRASE_HELP = (
    'e.g. "last week", "this month", "last 7 days", "yesterday", "week of 3 March", "in '
    'October", "October 2026", "last year", "three weeks ago", "on 11 November", "the week of '
    '2026-11-09" or "2026-02-01 to 2026-03-01"'
)


def resolve_phrase(text: str, today: date) -> Period:
    """The absolute period of a phrase, or InvalidRequest when it names none."""
    period, named = resolve_named(text, today)
    if not named:  # the default window stands for text it does not understand
        raise InvalidRequest(
            f"period {text!r} is not a period this service understands: {_PHRASE_HELP}"
        )
    _check_phrase_period(period)
    return period


def _check_phrase_period(period: Period) -> None:
    """Refuse periods over the limit or outside 1970-2100 (ranges are checked by their schema)."""
    if period.days > MAX_PERIOD_DAYS:
        raise InvalidRequest(f"the period spans {period.days} days; at most {MAX_PERIOD_DAYS}")
    try:
        check_calendar(period.start, period.end)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _period(value: DateRange) -> Period:
    """A validated range as a Period."""
    return Period(value.start, value.end)


def _previous(period: Period) -> Period:
    """The period a change is measured against by default (the previous calendar month for a
    calendar month, the previous year for a calendar year, else the equally long one just
    before), or InvalidRequest when none is."""
    try:
        return period.comparable_before()
    except ValueError as exc:
        raise InvalidRequest(f"{exc}; give a comparison range") from None


def resolve(body: ExplanationRequest, today: date) -> ExplanationQuery:
    """The request with absolute dates and every default filled in."""
    if isinstance(body.period, DateRange):
        period = _period(body.period)
    else:
        period = resolve_phrase(body.period, today)
    comparison = None
    if body.subject == "period_change":
        comparison = _period(body.comparison) if body.comparison else _previous(period)
    question = (body.question or "").strip() or None
    return ExplanationQuery(
        subject=body.subject,
        period=period,
        metric=body.metric or SUBJECT_METRICS[body.subject][0],
        comparison=comparison,
        channel=body.channel,
        attribution_model=(
            body.attribution_model or DEFAULT_ATTRIBUTION_MODEL
            if body.subject in MODEL_SUBJECTS
            else None
        ),
        question=question,
    )


class ChannelCodes:
    """Taxonomy codes known to exist, remembered for `ttl_s` (unknown codes are always checked)."""

    def __init__(self, ttl_s: float = 300.0) -> None:
        """Nothing known yet."""
        self._ttl_s = ttl_s
        self._known: dict[str, float] = {}

    def known(self, code: str) -> bool:
        """True if `code` was found in the taxonomy less than `ttl_s` ago (no database read)."""
        seen = self._known.get(code)
        return seen is not None and time.monotonic() - seen < self._ttl_s

    async def check(self, conn: asyncpg.Connection, code: str) -> None:
        """Return if `code` is in the channel taxonomy; InvalidRequest (422) otherwise.

        Reads on the request's own connection: a second checkout while holding one would let
        concurrent requests exhaust the pool and wait on each other forever.
        """
        now = time.monotonic()
        seen = self._known.get(code)
        if seen is not None and now - seen < self._ttl_s:
            return
        found = await known_channels(conn, [code])
        if code not in found:
            raise InvalidRequest(f"unknown channel code {code!r}")
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[code] = now
