"""The revenue ledger over a period: refunds and chargebacks, the largest orders, reconciliation."""

from __future__ import annotations

from datetime import date
from typing import Any, Final

import asyncpg

from llm_service.analytics.models import (
    LedgerStateTotal,
    ReconciliationRun,
    ReconciliationStatus,
    RevenueStateChanges,
    StateChangeChannel,
    StateChangeDay,
    StateChangeReason,
    StateChangeTotal,
    TopOrder,
    TopOrders,
)
from llm_service.analytics.shared_queries import (
    RUN_GRACE,
    TEXT_CHARS,
    check_period,
    row_cap,
    split_sections,
)

# idx_revenue_state_transitions_tenant (tenant_id, transitioned_at); the ledger and allocation by
# their (tenant_id, id) keys. One scan, four groupings; $4 caps each list, $5 the statement.
REVENUE_STATE_CHANGES: Final = f"""
WITH changes AS (
    SELECT t.to_state, (t.transitioned_at AT TIME ZONE 'UTC')::date AS day,
           a.channel_code AS channel, left(t.reason, {TEXT_CHARS}) AS reason,
           l.amount_cents, l.revenue_cents
    FROM revenue_state_transitions t
    JOIN revenue_ledger l ON l.tenant_id = t.tenant_id AND l.id = t.ledger_id
    LEFT JOIN attribution_allocations a ON a.tenant_id = l.tenant_id AND a.id = l.allocation_id
    WHERE t.transitioned_at >= $1 AND t.transitioned_at < $2
      AND t.to_state IN ('refunded', 'chargeback')
      AND ($3::text IS NULL OR a.channel_code = $3::text)
),
grouped AS (
    SELECT CASE GROUPING(day, channel, reason)
               WHEN 7 THEN 'state' WHEN 3 THEN 'day' WHEN 5 THEN 'channel' ELSE 'reason'
           END AS section,
           to_state, day, channel, reason, count(*) AS changes,
           sum(amount_cents)::bigint AS amount_cents, sum(revenue_cents)::bigint AS revenue_cents
    FROM changes
    GROUP BY GROUPING SETS ((to_state), (to_state, day), (to_state, channel), (to_state, reason))
),
ranked AS (
    SELECT g.*, row_number() OVER (
               PARTITION BY g.section
               ORDER BY g.changes DESC, g.amount_cents DESC, g.to_state, g.day, g.channel, g.reason
           ) AS rn
    FROM grouped g
)
SELECT section, to_state, day, channel, reason, changes, amount_cents, revenue_cents, rn
FROM ranked
WHERE rn <= $4
ORDER BY section, rn
LIMIT $5
"""


# idx_revenue_ledger_posted (tenant_id, posted_at), then a top-N sort by amount. Never metadata.
TOP_ORDERS: Final = """
SELECT l.order_id, l.transaction_id, l.state, l.previous_state, l.amount_cents,
       l.revenue_cents, l.currency, l.is_verified, a.channel_code AS channel,
       a.model_type AS attribution_model, l.posted_at
FROM revenue_ledger l
LEFT JOIN attribution_allocations a ON a.tenant_id = l.tenant_id AND a.id = l.allocation_id
WHERE l.posted_at >= $1 AND l.posted_at < $2
  AND ($3::text IS NULL OR a.channel_code = $3::text)
ORDER BY l.amount_cents DESC, l.posted_at DESC, l.id
LIMIT $4
"""

# Purchases via idx_events_tenant_occurred, ledger via idx_revenue_ledger_posted, runs via
# idx_reconciliation_runs_tenant (tenant_id, created_at). $3 caps runs, $4 the statement.
RECONCILIATION_STATUS: Final = f"""
WITH purchases AS (
    SELECT count(*) AS n, coalesce(sum(e.revenue_cents), 0)::bigint AS revenue
    FROM attribution_events e
    WHERE e.occurred_at >= $1 AND e.occurred_at < $2 AND e.event_type = 'purchase'
),
ledger AS (
    SELECT l.state, count(*) AS n, sum(l.amount_cents)::bigint AS amount,
           sum(l.revenue_cents)::bigint AS revenue,
           count(*) FILTER (WHERE NOT l.is_verified) AS unverified
    FROM revenue_ledger l
    WHERE l.posted_at >= $1 AND l.posted_at < $2
    GROUP BY l.state
),
runs AS (
    SELECT r.state, r.created_at, r.last_run_at,
           left(r.error_message, {TEXT_CHARS}) AS error_message,
           row_number() OVER (ORDER BY r.created_at DESC, r.id) AS rn
    FROM reconciliation_runs r
    WHERE r.created_at >= $1 AND r.created_at < $2::timestamptz + {RUN_GRACE}
)
SELECT 'events' AS section, NULL::text AS state, p.n AS rows, NULL::bigint AS amount_cents,
       p.revenue AS revenue_cents, NULL::bigint AS unverified_rows,
       NULL::timestamptz AS created_at, NULL::timestamptz AS last_run_at,
       NULL::text AS error_message, 1::bigint AS rn
FROM purchases p
UNION ALL
SELECT 'ledger', state, n, amount, revenue, unverified, NULL, NULL, NULL, 1
FROM ledger
UNION ALL
SELECT 'run', state, NULL, NULL, NULL, NULL, created_at, last_run_at, error_message, rn
FROM runs WHERE rn <= $3
ORDER BY section, rn, state
LIMIT $4
"""


async def revenue_state_changes(
    conn: asyncpg.Connection,
    start: date,
    end: date,
    *,
    channel: str | None = None,
    limit: int = 50,
) -> RevenueStateChanges:
    """Refunds and chargebacks in the period: totals, peak days, channels and reasons."""
    period = check_period(start, end)
    cap = row_cap(limit)
    rows = await conn.fetch(REVENUE_STATE_CHANGES, *period.bounds(), channel, cap, 4 * cap)
    sections, more = split_sections(rows, limit)

    def base(r: asyncpg.Record) -> dict[str, Any]:
        return {
            "to_state": r["to_state"],
            "changes": r["changes"],
            "amount_cents": r["amount_cents"],
            "revenue_cents": r["revenue_cents"],
        }

    days = sorted(sections.get("day", []), key=lambda r: (r["day"], r["to_state"]))
    return RevenueStateChanges(
        period=period,
        channel=channel,
        by_state=tuple(StateChangeTotal(**base(r)) for r in sections.get("state", [])),
        by_day=tuple(StateChangeDay(day=r["day"], **base(r)) for r in days),
        by_channel=tuple(
            StateChangeChannel(channel=r["channel"], **base(r)) for r in sections.get("channel", [])
        ),
        top_reasons=tuple(
            StateChangeReason(reason=r["reason"], **base(r)) for r in sections.get("reason", [])
        ),
        more_rows=more,
    )


async def top_orders(
    conn: asyncpg.Connection,
    start: date,
    end: date,
    *,
    channel: str | None = None,
    limit: int = 20,
) -> TopOrders:
    """The largest ledger orders posted in the period, with state and channel; no personal data."""
    period = check_period(start, end)
    rows = await conn.fetch(TOP_ORDERS, *period.bounds(), channel, row_cap(limit))
    return TopOrders(
        period=period,
        channel=channel,
        orders=tuple(TopOrder(**dict(r)) for r in rows[:limit]),
        more_rows=len(rows) > limit,
    )


async def reconciliation_status(
    conn: asyncpg.Connection, start: date, end: date, *, limit: int = 50
) -> ReconciliationStatus:
    """Purchase revenue in events against the ledger by state, and the related runs."""
    period = check_period(start, end)
    cap = row_cap(limit)
    rows = await conn.fetch(RECONCILIATION_STATUS, *period.bounds(), cap, cap + 5)
    sections, more = split_sections(rows, limit)
    events = sections["events"][0]
    ledger = [
        LedgerStateTotal(
            state=r["state"],
            rows=r["rows"],
            amount_cents=r["amount_cents"],
            revenue_cents=r["revenue_cents"],
            unverified_rows=r["unverified_rows"],
        )
        for r in sections.get("ledger", [])
    ]
    ledger_revenue = sum(s.revenue_cents for s in ledger)
    return ReconciliationStatus(
        period=period,
        event_purchases=events["rows"],
        event_purchase_revenue_cents=events["revenue_cents"],
        ledger_rows=sum(s.rows for s in ledger),
        ledger_revenue_cents=ledger_revenue,
        unverified_ledger_rows=sum(s.unverified_rows for s in ledger),
        event_minus_ledger_revenue_cents=events["revenue_cents"] - ledger_revenue,
        ledger_by_state=tuple(ledger),
        runs=tuple(
            ReconciliationRun(
                state=r["state"],
                created_at=r["created_at"],
                last_run_at=r["last_run_at"],
                error_message=r["error_message"],
            )
            for r in sections.get("run", [])
        ),
        more_rows=more,
    )
