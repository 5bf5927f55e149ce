"""What a correct answer must contain, computed from the data by the evaluation's own SQL.

Independent of the service's analytics queries and tools: plain SQL over the tables, run as
the owner with the tenant named explicitly (no RLS, no shared code), so an analyst that reads
the wrong rows cannot agree with it by construction.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from uuid import UUID

import asyncpg


def ts(day: date) -> datetime:
    """A day's UTC midnight."""
    return datetime.combine(day, time.min, tzinfo=UTC)


class Facts:
    """Independent figures about one tenant's data."""

    def __init__(self, conn: asyncpg.Connection, tenant_id: UUID) -> None:
        """Facts read through `conn` (the owner) for `tenant_id`."""
        self.conn = conn
        self.tenant = tenant_id

    async def channels(self, *, family: str | None = None, paid: bool | None = None) -> list[str]:
        """Active channel codes, optionally of one family or paid / unpaid."""
        rows = await self.conn.fetch(
            "SELECT code FROM channel_taxonomy WHERE is_active"
            " AND ($1::text IS NULL OR family = $1) AND ($2::bool IS NULL OR is_paid = $2)"
            " ORDER BY code",
            family,
            paid,
        )
        return [r["code"] for r in rows]

    async def events(self, channels: list[str] | None, a: date, b: date, what: str) -> int:
        """Sum over events in [a, b): 'revenue' (cents), 'conversions' or 'events'."""
        expr = {
            "revenue": "coalesce(sum(revenue_cents), 0)",
            "conversions": "count(*) FILTER (WHERE event_type IN ('purchase', 'conversion'))",
            "events": "count(*)",
        }[what]
        value = await self.conn.fetchval(
            f"SELECT {expr} FROM attribution_events WHERE tenant_id = $1"
            " AND occurred_at >= $2 AND occurred_at < $3"
            " AND ($4::text[] IS NULL OR channel = ANY($4))",
            self.tenant,
            ts(a),
            ts(b),
            channels,
        )
        return int(value)

    async def by_channel(self, a: date, b: date, what: str) -> dict[str, int]:
        """Per channel: 'revenue', 'conversions' or 'events' in [a, b)."""
        codes = await self.channels()
        return {c: await self.events([c], a, b, what) for c in codes}

    async def attributed(self, a: date, b: date, model: str = "last_touch") -> dict[str, int]:
        """Attributed revenue (cents) per channel for revenue events in [a, b)."""
        rows = await self.conn.fetch(
            "SELECT al.channel_code AS channel, sum(al.allocated_revenue_cents) AS cents"
            " FROM attribution_allocations al"
            " JOIN attribution_events e ON e.id = al.event_id AND e.tenant_id = al.tenant_id"
            " WHERE al.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3"
            " AND e.revenue_cents > 0 AND al.model_type = $4"
            " GROUP BY al.channel_code",
            self.tenant,
            ts(a),
            ts(b),
            model,
        )
        return {r["channel"]: int(r["cents"]) for r in rows}

    async def model_spread(self, a: date, b: date) -> tuple[str, int]:
        """The channel whose attributed revenue differs most between models, and the spread."""
        rows = await self.conn.fetch(
            "SELECT al.channel_code AS channel, al.model_type,"
            " sum(al.allocated_revenue_cents) AS cents"
            " FROM attribution_allocations al"
            " JOIN attribution_events e ON e.id = al.event_id AND e.tenant_id = al.tenant_id"
            " WHERE al.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3"
            " AND e.revenue_cents > 0 GROUP BY 1, 2",
            self.tenant,
            ts(a),
            ts(b),
        )
        models = {r["model_type"] for r in rows}
        per: dict[str, dict[str, int]] = {}
        for r in rows:
            per.setdefault(r["channel"], {})[r["model_type"]] = int(r["cents"])
        spreads = {
            c: max(v.get(m, 0) for m in models) - min(v.get(m, 0) for m in models)
            for c, v in per.items()
        }
        best = max(spreads, key=lambda c: (spreads[c], c))
        return best, spreads[best]

    async def reversals(self, a: date, b: date) -> dict[str, int]:
        """Refunds plus chargebacks transitioned in [a, b), per channel of the order."""
        rows = await self.conn.fetch(
            "SELECT coalesce(al.channel_code, 'unattributed') AS channel, count(*) AS n"
            " FROM revenue_state_transitions t"
            " JOIN revenue_ledger l ON l.id = t.ledger_id AND l.tenant_id = t.tenant_id"
            " LEFT JOIN attribution_allocations al ON al.id = l.allocation_id"
            " WHERE t.tenant_id = $1 AND t.transitioned_at >= $2 AND t.transitioned_at < $3"
            " AND t.to_state IN ('refunded', 'chargeback') GROUP BY 1",
            self.tenant,
            ts(a),
            ts(b),
        )
        return {r["channel"]: int(r["n"]) for r in rows}

    async def dead(self, a: date, b: date) -> dict[str, int]:
        """Dead events ingested in [a, b) per source."""
        rows = await self.conn.fetch(
            "SELECT source, count(*) AS n FROM dead_events WHERE tenant_id = $1"
            " AND ingested_at >= $2 AND ingested_at < $3 GROUP BY source",
            self.tenant,
            ts(a),
            ts(b),
        )
        return {r["source"]: int(r["n"]) for r in rows}

    async def corrected_events(self, src: str, dst: str, a: date, b: date) -> int:
        """Event corrections src -> dst of events that occurred in [a, b)."""
        value = await self.conn.fetchval(
            "SELECT count(*) FROM channel_assignment_corrections c"
            " JOIN attribution_events e ON e.id = c.entity_id AND e.tenant_id = c.tenant_id"
            " WHERE c.tenant_id = $1 AND c.entity_type = 'event' AND c.from_channel = $2"
            " AND c.to_channel = $3 AND e.occurred_at >= $4 AND e.occurred_at < $5",
            self.tenant,
            src,
            dst,
            ts(a),
            ts(b),
        )
        return int(value)

    async def largest_order(self, a: date, b: date) -> int:
        """The largest ledger amount (cents) posted in [a, b)."""
        value = await self.conn.fetchval(
            "SELECT coalesce(max(amount_cents), 0) FROM revenue_ledger WHERE tenant_id = $1"
            " AND posted_at >= $2 AND posted_at < $3",
            self.tenant,
            ts(a),
            ts(b),
        )
        return int(value)
