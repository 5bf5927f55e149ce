"""Every query of the job kit: claims, the batched lease renewal, hand-back, creation with an
Idempotency-Key, and the ledger rows (LLM calls) of a run, for any registered job table."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from llm_service.jobs.kinds import JobTable

# Up to $3 claims in one round trip: each call of the (volatile) claim function sees the rows
# the previous calls of the same statement already marked running, so none is claimed twice.
# $4: the runs this worker is executing, which it must not take over from itself; $5: the kinds
# this worker can run (migration 008: a kind it has not registered is never claimed).
_CLAIM_BATCH_SQL = """
SELECT c.* FROM generate_series(1, $3) AS g
CROSS JOIN LATERAL fn_claim_next_run($1, $2::double precision + 0 * g, $4::uuid[], $5::text[])
    AS c
WHERE c.run_id IS NOT NULL
"""


async def claim_batch(
    conn: asyncpg.Connection,
    worker: str,
    lease_s: float,
    limit: int,
    running: Collection[UUID],
    kinds: Collection[str] | None,
) -> list[asyncpg.Record]:
    """Up to `limit` runs of `kinds` (None: every kind) for `worker`: kind, run_id, tenant_id,
    takeover."""
    only = list(kinds) if kinds is not None else None
    return list(await conn.fetch(_CLAIM_BATCH_SQL, worker, lease_s, limit, list(running), only))


async def renew_leases(
    conn: asyncpg.Connection,
    worker: str,
    lease_s: float,
    run_ids: Sequence[UUID],
    *,
    timeout_s: float | None = None,
) -> Mapping[UUID, bool | None]:
    """Extend every lease `worker` still holds among `run_ids`, in one statement, across
    tenants; returns those held, each with its cancel flag (a missing run was lost; NULL: held
    but skipped, its row locked elsewhere, from a renewal that skips locked rows)."""
    rows = await conn.fetch(
        "SELECT run_id, cancel_requested FROM fn_renew_leases($1, $2, $3::uuid[])",
        worker,
        lease_s,
        list(run_ids),
        timeout=timeout_s,
    )
    return {r["run_id"]: r["cancel_requested"] for r in rows}


async def hand_back(conn: asyncpg.Connection, table: JobTable, run_id: UUID, worker: str) -> bool:
    """End this worker's lease at once (shutdown): any worker may take the run over now."""
    done = await conn.execute(
        f"""
        UPDATE {table.table} SET lease_expires_at = now()
         WHERE id = $1 AND lease_owner = $2 AND status = 'running'
        """,
        run_id,
        worker,
    )
    return bool(done == "UPDATE 1")


async def insert_idempotent(
    conn: asyncpg.Connection,
    table: JobTable,
    values: Mapping[str, Any],
    idempotency_key: str | None,
    returning: str,
) -> tuple[dict[str, Any], bool]:
    """Queue a run with `values` (the current tenant's); for an Idempotency-Key already used,
    return that run instead (created=False). The unique index settles concurrent retries."""
    columns = [*values, "idempotency_key"]
    for column in columns:
        assert column.isidentifier(), column  # names come from code, never from a request
    placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    row = await conn.fetchrow(
        f"""
        INSERT INTO {table.table} ({", ".join(columns)}) VALUES ({placeholders})
        ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING {returning}
        """,
        *values.values(),
        idempotency_key,
    )
    if row is not None:
        return dict(row), True
    existing = await conn.fetchrow(
        f"SELECT {returning} FROM {table.table} WHERE idempotency_key = $1", idempotency_key
    )
    assert existing is not None
    return dict(existing), False


async def llm_calls(
    conn: asyncpg.Connection, table: JobTable, run_id: UUID
) -> list[dict[str, Any]]:
    """The run's provider calls (its ledger rows) with their exact costs, in order."""
    rows = await conn.fetch(
        f"""
        SELECT id, model, attempt, status, input_tokens, output_tokens, cost_cents,
               cost_is_estimate, latency_ms, started_at
        FROM llm_api_calls WHERE {table.ledger_column} = $1 ORDER BY started_at, attempt
        """,
        run_id,
    )
    return [dict(r) for r in rows]


async def spent_cents(conn: asyncpg.Connection, table: JobTable, run_id: UUID) -> Decimal:
    """What the run's settled calls cost plus what its pending calls hold (worst case)."""
    value: Decimal = await conn.fetchval(
        f"""
        SELECT coalesce(sum(CASE WHEN status = 'pending' THEN reserved_cents
                                 ELSE cost_cents END), 0)
        FROM llm_api_calls WHERE {table.ledger_column} = $1
        """,
        run_id,
    )
    return value
