"""Two periods side by side, per channel and in total, and how far the data covers each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, timedelta
from typing import Any, Final

import asyncpg

from llm_service.analytics.models import (
    DataCoverage,
    Period,
    PeriodComparison,
    PeriodComparisonRow,
)
from llm_service.analytics.ratios import change_percent
from llm_service.analytics.shared_queries import (
    ALLOCATED,
    CONVERSION_TYPES,
    check_model_type,
    check_period,
    row_cap,
)

# Each period is its own index range (idx_events_tenant_occurred), however far apart they are;
# overlapping periods are fine: an event in both counts once in each.
_EVENT_FACTS: Final = f"""
    SELECT e.channel, {{flags}}, count(*) AS events,
           count(*) FILTER (WHERE e.event_type IN {CONVERSION_TYPES}) AS conversions,
           sum(e.revenue_cents)::bigint AS revenue_cents, 0::bigint AS attributed
    FROM attribution_events e
    WHERE e.occurred_at >= {{start}} AND e.occurred_at < {{end}}
    GROUP BY e.channel
"""
_REVENUE_EVENTS: Final = """
    SELECT e.tenant_id, e.id, {flags}
    FROM attribution_events e
    WHERE e.occurred_at >= {start} AND e.occurred_at < {end} AND e.revenue_cents > 0
"""
_CURRENT: Final = {"flags": "true AS in_current, false AS in_previous", "start": "$1", "end": "$2"}
_PREVIOUS: Final = {"flags": "false AS in_current, true AS in_previous", "start": "$3", "end": "$4"}
PERIOD_COMPARISON: Final = f"""
WITH event_facts AS (
    {_EVENT_FACTS.format(**_CURRENT)}
    UNION ALL
    {_EVENT_FACTS.format(**_PREVIOUS)}
),
period_revenue_events AS (
    {_REVENUE_EVENTS.format(**_CURRENT)}
    UNION ALL
    {_REVENUE_EVENTS.format(**_PREVIOUS)}
),
allocated AS (
    {ALLOCATED.format(extra=", e.in_current, e.in_previous", model=" AND a.model_type = $5")}
),
facts AS (
    SELECT channel, in_current, in_previous, events, conversions, revenue_cents, attributed
    FROM event_facts
    UNION ALL
    SELECT channel, in_current, in_previous, 0, 0, 0, sum(allocated_revenue_cents)::bigint
    FROM allocated
    GROUP BY 1, 2, 3
),
grouped AS (
    SELECT GROUPING(channel) = 1 AS is_total, channel,
           coalesce(sum(events) FILTER (WHERE in_current), 0)::bigint AS current_events,
           coalesce(sum(events) FILTER (WHERE in_previous), 0)::bigint AS previous_events,
           coalesce(sum(conversions) FILTER (WHERE in_current), 0)::bigint AS current_conversions,
           coalesce(sum(conversions) FILTER (WHERE in_previous), 0)::bigint
               AS previous_conversions,
           coalesce(sum(revenue_cents) FILTER (WHERE in_current), 0)::bigint AS current_revenue,
           coalesce(sum(revenue_cents) FILTER (WHERE in_previous), 0)::bigint AS previous_revenue,
           coalesce(sum(attributed) FILTER (WHERE in_current), 0)::bigint AS current_attributed,
           coalesce(sum(attributed) FILTER (WHERE in_previous), 0)::bigint AS previous_attributed
    FROM facts
    GROUP BY GROUPING SETS ((channel), ())
)
SELECT g.*
FROM grouped g
WHERE g.is_total OR ($6::text IS NULL AND $8::text[] IS NULL) OR g.channel = $6::text
   OR g.channel = ANY($8::text[])
ORDER BY g.is_total DESC, abs(g.current_revenue - g.previous_revenue) DESC,
         abs(g.current_attributed - g.previous_attributed) DESC, g.channel
LIMIT $7
"""

# The tenant's first and last event (both ends of idx_events_tenant_occurred).
DATA_COVERAGE: Final = """
SELECT (SELECT min(occurred_at) FROM attribution_events) AS first_at,
       (SELECT max(occurred_at) FROM attribution_events) AS last_at
"""


_SUMMED: Final = (
    "current_events", "previous_events", "current_conversions", "previous_conversions",
    "current_revenue", "previous_revenue", "current_attributed", "previous_attributed",
)  # fmt: skip


def _summed(rows: Sequence[asyncpg.Record]) -> PeriodComparisonRow:
    """The channels' rows as one row (channel None) with its own changes."""
    total = {field: sum(int(r[field]) for r in rows) for field in _SUMMED}
    return _comparison_row({"is_total": True, "channel": None, **total})


def _comparison_row(r: Mapping[str, Any]) -> PeriodComparisonRow:
    cur_conv, prev_conv = r["current_conversions"], r["previous_conversions"]
    cur_rev, prev_rev = r["current_revenue"], r["previous_revenue"]
    cur_attr, prev_attr = r["current_attributed"], r["previous_attributed"]
    return PeriodComparisonRow(
        channel=None if r["is_total"] else r["channel"],
        current_events=r["current_events"],
        previous_events=r["previous_events"],
        current_conversions=cur_conv,
        previous_conversions=prev_conv,
        conversions_change=cur_conv - prev_conv,
        conversions_change_pct=change_percent(cur_conv, prev_conv),
        current_revenue_cents=cur_rev,
        previous_revenue_cents=prev_rev,
        revenue_change_cents=cur_rev - prev_rev,
        revenue_change_pct=change_percent(cur_rev, prev_rev),
        current_attributed_revenue_cents=cur_attr,
        previous_attributed_revenue_cents=prev_attr,
        attributed_revenue_change_cents=cur_attr - prev_attr,
        attributed_revenue_change_pct=change_percent(cur_attr, prev_attr),
    )


async def period_comparison(
    conn: asyncpg.Connection,
    current: tuple[date, date],
    previous: tuple[date, date],
    *,
    channel: str | None = None,
    channels: Sequence[str] | None = None,
    model_type: str = "last_touch",
    limit: int = 50,
) -> PeriodComparison:
    """Per channel, two periods side by side, largest revenue movement first (plus totals over
    every channel); `channel` or `channels` keep only those channels' rows."""
    cur, prev = check_period(*current), check_period(*previous)
    model = check_model_type(model_type)
    rows = await conn.fetch(
        PERIOD_COMPARISON,
        *cur.bounds(),
        *prev.bounds(),
        model,
        channel,
        row_cap(limit) + 1,  # the totals row comes first
        list(channels) if channels else None,
    )
    totals = [_comparison_row(r) for r in rows if r["is_total"]]
    channel_rows = [r for r in rows if not r["is_total"]]
    by_channel = [_comparison_row(r) for r in channel_rows]
    coverage = await data_coverage(conn, cur, prev)
    return PeriodComparison(
        current=cur,
        previous=prev,
        model_type=model,
        channel=channel,
        channels=tuple(channels) if channels else None,
        # Whole only when the row limit cut none of the channels asked for.
        channels_total=_summed(channel_rows) if channels and len(channel_rows) <= limit else None,
        totals=totals[0],
        rows=tuple(by_channel[:limit]),
        more_rows=len(by_channel) > limit,
        coverage=coverage,
        warnings=coverage_warnings(coverage, cur, prev),
    )


async def data_coverage(
    conn: asyncpg.Connection, current: Period, previous: Period
) -> DataCoverage:
    """The first and last day of the tenant's events, and the days of each period they cover."""
    row = await conn.fetchrow(DATA_COVERAGE)
    first = row["first_at"].astimezone(UTC).date() if row and row["first_at"] else None
    last = row["last_at"].astimezone(UTC).date() if row and row["last_at"] else None

    def covered(period: Period) -> int:
        if first is None or last is None:
            return 0
        start, end = max(period.start, first), min(period.end, last + timedelta(days=1))
        return max(0, int((end - start).days))

    return DataCoverage(
        first_day=first,
        last_day=last,
        current_days_with_data=covered(current),
        previous_days_with_data=covered(previous),
    )


def coverage_warnings(coverage: DataCoverage, current: Period, previous: Period) -> tuple[str, ...]:
    """Plain warnings for periods the data does not (fully) cover: unknown, never zero."""
    span = (
        f"the data covers {coverage.first_day} to {coverage.last_day}"
        if coverage.first_day
        else "there is no event data at all"
    )
    warnings = []
    for label, period, days in (
        ("current", current, coverage.current_days_with_data),
        ("previous", previous, coverage.previous_days_with_data),
    ):
        if days == 0:
            warnings.append(
                f"the {label} period {period.start} to {period.end} has no data ({span}): "
                "its figures are unknown, not zero; do not read the changes as movements"
            )
        elif days < period.days:
            warnings.append(
                f"only {days} of the {period.days} days of the {label} period {period.start} to "
                f"{period.end} have data ({span}): the comparison is not like for like"
            )
    return tuple(warnings)
