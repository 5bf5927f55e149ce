"""Data quality over a period: the dead events ingested and the channel corrections made."""

from __future__ import annotations

from datetime import date
from typing import Final

import asyncpg

from llm_service.analytics.models import (
    ChannelCorrections,
    CorrectionAuthor,
    CorrectionPair,
    DeadEventDay,
    DeadEventGroup,
    DeadEventSource,
    DeadEventSummary,
    Period,
)
from llm_service.analytics.shared_queries import (
    REMEDIATION_STATUSES,
    TEXT_CHARS,
    check_period,
    row_cap,
    split_sections,
)

# idx_dead_events_tenant_status (tenant_id, remediation_status, ingested_at): the IN list over
# every allowed status (a CHECK constraint) lets the period be an index range per status.
DEAD_EVENT_SUMMARY: Final = f"""
WITH dead AS MATERIALIZED (
    SELECT d.source, d.error_type, d.remediation_status, d.ingested_at, d.error_message
    FROM dead_events d
    WHERE d.remediation_status IN {REMEDIATION_STATUSES}
      AND d.ingested_at >= $1 AND d.ingested_at < $2
),
groups AS (
    SELECT source, error_type, remediation_status, count(*) AS events,
           min(ingested_at) AS first_seen, max(ingested_at) AS last_seen,
           left((array_agg(error_message ORDER BY ingested_at DESC))[1], {TEXT_CHARS})
               AS latest_error_message,
           row_number() OVER (ORDER BY count(*) DESC, source, error_type, remediation_status)
               AS rn
    FROM dead
    GROUP BY source, error_type, remediation_status
),
days AS (
    SELECT (ingested_at AT TIME ZONE 'UTC')::date AS day, count(*) AS events,
           mode() WITHIN GROUP (ORDER BY source) AS top_source,
           row_number() OVER (ORDER BY count(*) DESC, (ingested_at AT TIME ZONE 'UTC')::date)
               AS rn
    FROM dead
    GROUP BY (ingested_at AT TIME ZONE 'UTC')::date
),
sources AS (
    SELECT source, count(*) AS events, row_number() OVER (ORDER BY count(*) DESC, source) AS rn
    FROM dead
    GROUP BY source
)
SELECT 'group' AS section, source, error_type, remediation_status, NULL::date AS day, events,
       first_seen, last_seen, latest_error_message, rn
FROM groups WHERE rn <= $3
UNION ALL
SELECT 'source', source, NULL, NULL, NULL, events, NULL, NULL, NULL, rn
FROM sources WHERE rn <= $3
UNION ALL
SELECT 'day', top_source, NULL, NULL, day, events, NULL, NULL, NULL, rn
FROM days WHERE rn <= $3
UNION ALL
SELECT 'total', NULL, NULL, NULL, NULL, count(*), NULL, NULL, NULL, 1
FROM dead
ORDER BY section, rn
LIMIT $4
"""

# Corrections made in the period (idx_channel_corrections_tenant (tenant_id, corrected_at)) and
# corrections of the period's events or of their allocations, whenever they were made (the
# period's events by idx_events_tenant_occurred, then idx_channel_corrections_entity per id):
# asking about the week of a mis-tagging finds the fix made days later.
CHANNEL_CORRECTIONS: Final = f"""
WITH period_events AS MATERIALIZED (
    SELECT e.tenant_id, e.id
    FROM attribution_events e
    WHERE e.occurred_at >= $1 AND e.occurred_at < $2
),
about AS (
    SELECT c.id
    FROM period_events e
    JOIN channel_assignment_corrections c
      ON c.tenant_id = e.tenant_id AND c.entity_type = 'event' AND c.entity_id = e.id
    UNION
    SELECT c.id
    FROM period_events e
    JOIN attribution_allocations a ON a.tenant_id = e.tenant_id AND a.event_id = e.id
    JOIN channel_assignment_corrections c
      ON c.tenant_id = a.tenant_id AND c.entity_type = 'allocation' AND c.entity_id = a.id
),
c AS MATERIALIZED (
    SELECT c.from_channel, c.to_channel, c.entity_type, c.corrected_by, c.corrected_at,
           left(c.reason, {TEXT_CHARS}) AS reason, (c.id IN (SELECT id FROM about)) AS about
    FROM channel_assignment_corrections c
    WHERE (c.corrected_at >= $1 AND c.corrected_at < $2) OR c.id IN (SELECT id FROM about)
),
pairs AS (
    SELECT from_channel, to_channel, count(*) AS corrections,
           count(*) FILTER (WHERE entity_type = 'event') AS event_corrections,
           count(*) FILTER (WHERE entity_type = 'allocation') AS allocation_corrections,
           min(corrected_at) AS first_at, max(corrected_at) AS last_at,
           (array_agg(DISTINCT corrected_by ORDER BY corrected_by))[1:5] AS correctors,
           count(*) FILTER (WHERE about) AS about,
           row_number() OVER (ORDER BY count(*) DESC, from_channel, to_channel) AS rn
    FROM c
    GROUP BY from_channel, to_channel
),
reasons AS (
    SELECT from_channel, to_channel, reason,
           row_number() OVER (PARTITION BY from_channel, to_channel
                              ORDER BY max(corrected_at) DESC, reason) AS rn
    FROM c
    WHERE reason IS NOT NULL
    GROUP BY from_channel, to_channel, reason
),
pair_reasons AS (
    SELECT from_channel, to_channel, array_agg(reason ORDER BY rn) AS reasons
    FROM reasons
    WHERE rn <= 3
    GROUP BY from_channel, to_channel
),
authors AS (
    SELECT corrected_by, count(*) AS corrections,
           row_number() OVER (ORDER BY count(*) DESC, corrected_by) AS rn
    FROM c
    GROUP BY corrected_by
)
SELECT 'pair' AS section, p.from_channel, p.to_channel, NULL::text AS corrected_by,
       p.corrections, p.event_corrections, p.allocation_corrections, p.first_at, p.last_at,
       p.correctors, coalesce(r.reasons, '{{}}'::text[]) AS reasons, p.about, p.rn
FROM pairs p
LEFT JOIN pair_reasons r ON r.from_channel = p.from_channel AND r.to_channel = p.to_channel
WHERE p.rn <= $3
UNION ALL
SELECT 'author', NULL, NULL, corrected_by, corrections, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, rn
FROM authors WHERE rn <= $3
UNION ALL
SELECT 'total', NULL, NULL, NULL, count(*), NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1
FROM c
ORDER BY section, rn
LIMIT $4
"""


async def _fetch_sections(
    conn: asyncpg.Connection, statement: str, period: Period, limit: int, *, lists: int
) -> tuple[dict[str, list[asyncpg.Record]], bool]:
    """Run a statement of `lists` capped lists and a one-row 'total' section over the period:
    its rows by section, each cut to `limit`, and whether any list was cut."""
    cap = row_cap(limit)
    rows = await conn.fetch(statement, *period.bounds(), cap, lists * cap + 1)
    return split_sections(rows, limit)


async def dead_event_summary(
    conn: asyncpg.Connection, start: date, end: date, *, limit: int = 50
) -> DeadEventSummary:
    """Dead events ingested in the period by source, error type and status, and peak days."""
    period = check_period(start, end)
    sections, more = await _fetch_sections(conn, DEAD_EVENT_SUMMARY, period, limit, lists=3)
    return DeadEventSummary(
        period=period,
        total_events=sections["total"][0]["events"],
        groups=tuple(
            DeadEventGroup(
                source=r["source"],
                error_type=r["error_type"],
                remediation_status=r["remediation_status"],
                events=r["events"],
                first_seen=r["first_seen"],
                last_seen=r["last_seen"],
                latest_error_message=r["latest_error_message"],
            )
            for r in sections.get("group", [])
        ),
        peak_days=tuple(
            DeadEventDay(day=r["day"], events=r["events"], top_source=r["source"])
            for r in sections.get("day", [])
        ),
        by_source=tuple(
            DeadEventSource(source=r["source"], events=r["events"])
            for r in sections.get("source", [])
        ),
        more_rows=more,
    )


async def channel_corrections(
    conn: asyncpg.Connection, start: date, end: date, *, limit: int = 50
) -> ChannelCorrections:
    """Channel corrections made in the period or of its events, by (from, to) channel and by
    who made them."""
    period = check_period(start, end)
    sections, more = await _fetch_sections(conn, CHANNEL_CORRECTIONS, period, limit, lists=2)
    return ChannelCorrections(
        period=period,
        total_corrections=sections["total"][0]["corrections"],
        pairs=tuple(
            CorrectionPair(
                from_channel=r["from_channel"],
                to_channel=r["to_channel"],
                corrections=r["corrections"],
                event_corrections=r["event_corrections"],
                allocation_corrections=r["allocation_corrections"],
                first_corrected_at=r["first_at"],
                last_corrected_at=r["last_at"],
                corrected_by=tuple(r["correctors"]),
                latest_reasons=tuple(r["reasons"]),
                about_period_events=r["about"],
            )
            for r in sections.get("pair", [])
        ),
        by_corrector=tuple(
            CorrectionAuthor(corrected_by=r["corrected_by"], corrections=r["corrections"])
            for r in sections.get("author", [])
        ),
        more_rows=more,
    )
