"""Every query about costs: the monthly roll-up, daily spend and reconciliation (the ledger's
own rows, reservations and the cap: `ledger_repository`)."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

import asyncpg

_MONTHLY_SQL = """
SELECT total_cost_cents, estimated_cost_cents, total_calls, total_input_tokens,
       total_output_tokens, model_breakdown, endpoint_breakdown, kind_breakdown
FROM llm_monthly_costs
WHERE tenant_id = $1 AND month = $2
"""

_DAILY_SQL = """
SELECT (date_trunc('day', started_at AT TIME ZONE 'UTC'))::date AS day, model,
       count(*) AS calls,
       coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
       sum(cost_cents) AS cost_cents,
       coalesce(sum(cost_cents) FILTER (WHERE cost_is_estimate), 0) AS estimated_cost_cents
FROM llm_api_calls
WHERE tenant_id = $1 AND status <> 'pending'
  AND started_at >= ($2::date)::timestamp AT TIME ZONE 'UTC'
  AND started_at < (($2::date) + interval '1 month') AT TIME ZONE 'UTC'
GROUP BY 1, 2
ORDER BY 1, 2
"""


async def monthly_row(
    conn: asyncpg.Connection, tenant_id: UUID, month: date
) -> dict[str, Any] | None:
    """The tenant's `llm_monthly_costs` row for a month (first day), or None without calls."""
    row = await conn.fetchrow(_MONTHLY_SQL, tenant_id, month)
    return dict(row) if row is not None else None


async def daily_spend(
    conn: asyncpg.Connection, tenant_id: UUID, month: date
) -> list[dict[str, Any]]:
    """Settled spend per UTC day and model in a month, from the calls themselves."""
    return [dict(r) for r in await conn.fetch(_DAILY_SQL, tenant_id, month)]


async def reconcile_rows(conn: asyncpg.Connection, month: date | None) -> list[asyncpg.Record]:
    """Every monthly row against the sum of its settled calls, across tenants (definer function)."""
    return list(await conn.fetch("SELECT * FROM fn_reconcile_monthly_costs($1)", month))
