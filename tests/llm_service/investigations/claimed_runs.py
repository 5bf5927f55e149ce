"""One test helper: a run queued as the API would and claimed for a test's own worker."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import asyncpg

from llm_service.db.pool import tenant_transaction


async def queue_claimed_run(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    question: str,
    *,
    max_cost_cents: Decimal = Decimal(30),
    timeout_ms: int = 60_000,
    max_steps: int = 8,
    worker: str = "test-worker",
) -> UUID:
    """Insert the run with the columns the application role may write at creation, then take
    its lease as fn_claim_next_run would (not through the shared queue, which other tests use)."""
    async with tenant_transaction(pool, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            tenant_id,
            question,
            max_cost_cents,
            timeout_ms,
            max_steps,
        )
        await conn.execute(
            "UPDATE investigations SET status = 'running', lease_owner = $2, "
            "lease_expires_at = now() + interval '1 minute' WHERE id = $1",
            run_id,
            worker,
        )
    return run_id
