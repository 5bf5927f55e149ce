"""Every query of budget optimisation: the jobs (the queue rows) and the channel figures (the
queue's own queries, shared with every job kind, are in `llm_service.jobs.repository`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from llm_service.db.queries import present_run_token
from llm_service.jobs import repository as jobs
from llm_service.jobs.kinds import JobTable

TABLE = JobTable(
    "budget_optimization", "budget_optimization_jobs", ledger_column="budget_optimization_job_id"
)
TERMINAL_STATES = frozenset({"succeeded", "budget_exhausted", "timed_out", "failed", "cancelled"})

COLUMNS = """id, status, reason, degraded, params, recommendations, rationale, max_cost_cents,
    cost_cents, idempotency_key, attempts, lease_owner, queued_at, started_at, finished_at,
    created_at"""

# Per channel, over events that occurred in [start, end):
# - attributed: the allocations of the requested model_type (their cents, and distinct events);
# - ledger: ledger rows whose allocation (of any model) is on the channel, by their CURRENT state
#   (a row moves captured -> refunded/chargeback, audited in revenue_state_transitions), so
#   gross = captured + refunded + chargeback, and net = gross - refunded - chargeback.
#   Authorized rows are not yet money: reported, counted in neither.
# Sums of bigint cents come back as exact NUMERIC.
_FIGURES_SQL = """
WITH attributed AS (
    SELECT a.channel_code, sum(a.allocated_revenue_cents) AS attributed_cents,
           count(DISTINCT a.event_id) AS events, count(*) AS allocations
    FROM attribution_allocations a
    JOIN attribution_events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id
    WHERE a.model_type = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
    GROUP BY a.channel_code
),
ledger AS (
    SELECT a.channel_code, count(*) AS ledger_rows,
           coalesce(sum(l.revenue_cents) FILTER (
               WHERE l.state IN ('captured', 'refunded', 'chargeback')), 0) AS gross_cents,
           coalesce(sum(l.revenue_cents) FILTER (WHERE l.state = 'refunded'), 0) AS refunded_cents,
           coalesce(sum(l.revenue_cents) FILTER (WHERE l.state = 'chargeback'), 0)
               AS chargeback_cents,
           coalesce(sum(l.revenue_cents) FILTER (WHERE l.state = 'authorized'), 0)
               AS authorized_cents
    FROM revenue_ledger l
    JOIN attribution_allocations a ON a.tenant_id = l.tenant_id AND a.id = l.allocation_id
    JOIN attribution_events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id
    WHERE e.occurred_at >= $2 AND e.occurred_at < $3
    GROUP BY a.channel_code
)
SELECT coalesce(t.channel_code, g.channel_code) AS channel_code,
       coalesce(t.attributed_cents, 0) AS attributed_cents,
       coalesce(t.events, 0) AS events,
       coalesce(t.allocations, 0) AS allocations,
       coalesce(g.ledger_rows, 0) AS ledger_rows,
       coalesce(g.gross_cents, 0) AS gross_cents,
       coalesce(g.refunded_cents, 0) AS refunded_cents,
       coalesce(g.chargeback_cents, 0) AS chargeback_cents,
       coalesce(g.authorized_cents, 0) AS authorized_cents
FROM attributed t FULL JOIN ledger g ON g.channel_code = t.channel_code
ORDER BY 1
"""


@dataclass(frozen=True)
class ChannelSums:
    """One channel's exact integer-cent sums over the period."""

    channel: str
    attributed_cents: int
    events: int
    allocations: int
    ledger_rows: int
    gross_cents: int
    refunded_cents: int
    chargeback_cents: int
    authorized_cents: int

    @property
    def net_cents(self) -> int:
        """Ledger revenue that stayed: gross less refunds and chargebacks."""
        return self.gross_cents - self.refunded_cents - self.chargeback_cents


async def channel_sums(
    conn: asyncpg.Connection, model_type: str, start: datetime, end: datetime
) -> list[ChannelSums]:
    """Every channel with allocations or ledger rows in [start, end), ordered by code."""
    rows = await conn.fetch(_FIGURES_SQL, model_type, start, end)
    return [
        ChannelSums(
            channel=r["channel_code"],
            attributed_cents=int(r["attributed_cents"]),
            events=int(r["events"]),
            allocations=int(r["allocations"]),
            ledger_rows=int(r["ledger_rows"]),
            gross_cents=int(r["gross_cents"]),
            refunded_cents=int(r["refunded_cents"]),
            chargeback_cents=int(r["chargeback_cents"]),
            authorized_cents=int(r["authorized_cents"]),
        )
        for r in rows
    ]


async def display_names(conn: asyncpg.Connection, codes: list[str]) -> dict[str, str]:
    """Display names of taxonomy codes (unknown codes are absent)."""
    rows = await conn.fetch(
        "SELECT code, display_name FROM channel_taxonomy WHERE code = ANY($1::text[])", codes
    )
    return {r["code"]: r["display_name"] for r in rows}


async def paid_channels(conn: asyncpg.Connection, codes: list[str]) -> set[str]:
    """The codes among `codes` that the taxonomy marks as paid media (is_paid)."""
    rows = await conn.fetch(
        "SELECT code FROM channel_taxonomy WHERE code = ANY($1::text[]) AND is_paid", codes
    )
    return {r["code"] for r in rows}


async def get(conn: asyncpg.Connection, job_id: UUID) -> dict[str, Any] | None:
    """One job of the current tenant (RLS hides every other tenant's)."""
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM budget_optimization_jobs WHERE id = $1", job_id
    )
    return dict(row) if row else None


async def finish(
    conn: asyncpg.Connection,
    job_id: UUID,
    worker: str,
    lease_token: UUID,
    *,
    status: str,
    reason: str | None,
    recommendations: dict[str, Any] | None,
    rationale: str | None,
    degraded: bool,
) -> bool:
    """Record a terminal state (overwriting any earlier attempt's), if this worker holds the job
    (its lease token). The spend is not written here: the ledger keeps it."""
    assert status in TERMINAL_STATES
    await present_run_token(conn, lease_token)
    done: bool | None = await conn.fetchval(
        "SELECT fn_finish_optimization($1, $2, $3, $4, $5, $6, $7)",
        job_id,
        worker,
        status,
        reason,
        recommendations,
        rationale,
        degraded,
    )
    return bool(done)


async def holds_lease(conn: asyncpg.Connection, job_id: UUID, worker: str, token: UUID) -> bool:
    """Whether `worker` with the claim's `token` still holds the job."""
    return await jobs.holds_lease(conn, TABLE, job_id, worker, token)


async def spent_cents(conn: asyncpg.Connection, job_id: UUID) -> Decimal:
    """What the job's settled calls cost plus what its pending calls hold (worst case)."""
    return await jobs.spent_cents(conn, TABLE, job_id)


async def llm_calls(conn: asyncpg.Connection, job_id: UUID) -> list[dict[str, Any]]:
    """The job's provider calls with their exact costs, in order."""
    return await jobs.llm_calls(conn, TABLE, job_id)


async def known_channels(conn: asyncpg.Connection, codes: list[str]) -> set[str]:
    """Which of `codes` exist in the channel taxonomy."""
    rows = await conn.fetch("SELECT code FROM channel_taxonomy WHERE code = ANY($1::text[])", codes)
    return {r["code"] for r in rows}
