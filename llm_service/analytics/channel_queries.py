"""Per channel over a period: events, revenue and what each attribution model credits it with."""

from __future__ import annotations

from datetime import date
from typing import Final

import asyncpg

from llm_service.analytics.models import (
    MODEL_TYPES,
    AttributionModelComparison,
    ChannelPerformance,
    ChannelPerformanceRow,
    ModelComparisonRow,
)
from llm_service.analytics.ratios import percent
from llm_service.analytics.shared_queries import (
    ALLOCATED,
    CONVERSION_TYPES,
    check_model_type,
    check_period,
    row_cap,
)

CHANNEL_PERFORMANCE: Final = f"""
WITH event_totals AS (
    SELECT e.channel, count(*) AS events,
           count(*) FILTER (WHERE e.event_type IN {CONVERSION_TYPES}) AS conversions,
           sum(e.revenue_cents)::bigint AS revenue_cents
    FROM attribution_events e
    WHERE e.occurred_at >= $1 AND e.occurred_at < $2
    GROUP BY e.channel
),
period_revenue_events AS (
    SELECT e.tenant_id, e.id
    FROM attribution_events e
    WHERE e.occurred_at >= $1 AND e.occurred_at < $2 AND e.revenue_cents > 0
),
allocated AS ({ALLOCATED.format(extra="", model=" AND a.model_type = $3")}),
attributed AS (
    SELECT channel, sum(allocated_revenue_cents)::bigint AS cents FROM allocated GROUP BY channel
),
by_channel AS (
    SELECT coalesce(t.channel, a.channel) AS channel, coalesce(t.events, 0) AS events,
           coalesce(t.conversions, 0) AS conversions, coalesce(t.revenue_cents, 0) AS revenue_cents,
           coalesce(a.cents, 0) AS attributed_revenue_cents
    FROM event_totals t
    FULL JOIN attributed a ON a.channel = t.channel
)
-- Always at least one row (all NULL but the total when no channel matches).
SELECT b.channel, b.events, b.conversions, b.revenue_cents, b.attributed_revenue_cents,
       t.total AS total_attributed_revenue_cents
FROM (SELECT coalesce(sum(attributed_revenue_cents), 0)::bigint AS total FROM by_channel) t
LEFT JOIN by_channel b ON $4::text IS NULL OR b.channel = $4::text
ORDER BY b.attributed_revenue_cents DESC NULLS LAST, b.revenue_cents DESC, b.channel
LIMIT $5
"""


# One row per (channel, model); channels ranked by max - min across the models with data.
# $4 caps channels, $5 the statement (channels x at most six model types).
ATTRIBUTION_MODEL_COMPARISON: Final = f"""
WITH period_revenue_events AS (
    SELECT e.tenant_id, e.id
    FROM attribution_events e
    WHERE e.occurred_at >= $1 AND e.occurred_at < $2 AND e.revenue_cents > 0
),
allocated AS ({ALLOCATED.format(extra="", model="")}),
sums AS (
    SELECT channel, model_type, sum(allocated_revenue_cents)::bigint AS cents
    FROM allocated
    GROUP BY channel, model_type
),
models AS (SELECT DISTINCT model_type FROM sums),
channels AS (SELECT DISTINCT channel FROM sums WHERE $3::text IS NULL OR channel = $3::text),
grid AS (
    SELECT c.channel, m.model_type, coalesce(s.cents, 0)::bigint AS cents
    FROM channels c
    CROSS JOIN models m
    LEFT JOIN sums s ON s.channel = c.channel AND s.model_type = m.model_type
),
ranked AS (
    SELECT channel, row_number() OVER (ORDER BY max(cents) - min(cents) DESC, channel) AS rn
    FROM grid
    GROUP BY channel
)
SELECT g.channel, g.model_type, g.cents, r.rn
FROM grid g
JOIN ranked r ON r.channel = g.channel
WHERE r.rn <= $4
ORDER BY r.rn, g.model_type
LIMIT $5
"""


async def channel_performance(
    conn: asyncpg.Connection,
    start: date,
    end: date,
    *,
    channel: str | None = None,
    model_type: str = "last_touch",
    limit: int = 50,
) -> ChannelPerformance:
    """Per channel: events, conversions, event revenue and the revenue a model attributes."""
    period = check_period(start, end)
    model = check_model_type(model_type)
    rows = await conn.fetch(CHANNEL_PERFORMANCE, *period.bounds(), model, channel, row_cap(limit))
    total = int(rows[0]["total_attributed_revenue_cents"]) if rows else 0
    found = [r for r in rows if r["channel"] is not None]
    return ChannelPerformance(
        period=period,
        model_type=model,
        channel=channel,
        total_attributed_revenue_cents=total,
        rows=tuple(
            ChannelPerformanceRow(
                channel=r["channel"],
                events=r["events"],
                conversions=r["conversions"],
                revenue_cents=r["revenue_cents"],
                attributed_revenue_cents=r["attributed_revenue_cents"],
                attributed_share_pct=percent(r["attributed_revenue_cents"], total),
            )
            for r in found[:limit]
        ),
        more_rows=len(found) > limit,
    )


async def attribution_model_comparison(
    conn: asyncpg.Connection,
    start: date,
    end: date,
    *,
    channel: str | None = None,
    limit: int = 50,
) -> AttributionModelComparison:
    """Per channel, attributed revenue under every model with data; largest disagreement first."""
    period = check_period(start, end)
    cap = row_cap(limit)
    rows = await conn.fetch(
        ATTRIBUTION_MODEL_COMPARISON, *period.bounds(), channel, cap, cap * len(MODEL_TYPES)
    )
    by_channel: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["rn"] <= limit:
            by_channel.setdefault(r["channel"], {})[r["model_type"]] = r["cents"]
    result_rows = []
    for name, by_model in by_channel.items():
        highest = max(by_model, key=lambda m: (by_model[m], m))
        lowest = min(by_model, key=lambda m: (by_model[m], m))
        spread = by_model[highest] - by_model[lowest]
        result_rows.append(
            ModelComparisonRow(
                channel=name,
                attributed_by_model=by_model,
                highest_model=highest,
                lowest_model=lowest,
                spread_cents=spread,
                spread_pct=percent(spread, by_model[highest]),
            )
        )
    return AttributionModelComparison(
        period=period,
        channel=channel,
        model_types=tuple(sorted({r["model_type"] for r in rows})),
        rows=tuple(result_rows),
        more_rows=any(r["rn"] > limit for r in rows),
    )
