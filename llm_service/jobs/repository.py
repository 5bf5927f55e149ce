"""Every query of the job kit: claims, the batched lease renewal by token, the lease guard,
hand-back, creation with an Idempotency-Key (one table of keys for every kind), and the ledger
rows (LLM calls) of a run, for any registered job table."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from llm_service.db.queries import present_run_token
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
    takeover, lease_token (the secret the row keeps only the hash of)."""
    only = list(kinds) if kinds is not None else None
    return list(await conn.fetch(_CLAIM_BATCH_SQL, worker, lease_s, limit, list(running), only))


async def renew_leases(
    conn: asyncpg.Connection,
    worker: str,
    lease_s: float,
    tokens: Sequence[UUID],
    *,
    timeout_s: float | None = None,
) -> Mapping[UUID, bool | None]:
    """Extend every lease `worker` still holds among those of `tokens`, in one statement, across
    tenants; returns the runs held (by id), each with its cancel flag, or None for a run held but
    not renewed this time (another transaction had its row locked). A missing run was lost."""
    rows = await conn.fetch(
        "SELECT run_id, cancel_requested, renewed FROM fn_renew_leases($1, $2, $3::uuid[])",
        worker,
        lease_s,
        list(tokens),
        timeout=timeout_s,
    )
    return {
        r["run_id"]: True if r["cancel_requested"] else (False if r["renewed"] else None)
        for r in rows
    }


# The lease is held by worker $2 with token $3: the row keeps sha256 of the token (migration
# 009), so only the worker the claim answered can present it (the holder's writes are checked
# the same way by the database: migration 012's functions).
LEASE_HELD = (
    "lease_owner = $2 AND lease_token_hash = sha256(uuid_send($3::uuid)) AND status = 'running'"
)


async def holds_lease(
    conn: asyncpg.Connection, table: JobTable, run_id: UUID, worker: str, token: UUID
) -> bool:
    """Whether `worker` with `token` still holds the run's lease (the current tenant's run)."""
    held = await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {table.table} WHERE id = $1 AND {LEASE_HELD})",
        run_id,
        worker,
        token,
    )
    return bool(held)


async def hand_back(
    conn: asyncpg.Connection, table: JobTable, run_id: UUID, worker: str, token: UUID
) -> bool:
    """End this worker's lease at once (shutdown): any worker may take the run over now."""
    await present_run_token(conn, token)
    done: bool | None = await conn.fetchval(
        "SELECT fn_hand_back_run($1, $2, $3)", table.kind, run_id, worker
    )
    return bool(done)


# What a unique violation while queueing with a key means: the key is taken (by any kind).
KEY_TAKEN = frozenset(
    {
        "job_idempotency_keys_pkey",
        "uq_investigations_idempotency",
        "uq_budget_optimization_jobs_idempotency",
    }
)


async def insert_run(
    conn: asyncpg.Connection,
    table: JobTable,
    values: Mapping[str, Any],
    idempotency_key: str | None,
    returning: str,
) -> dict[str, Any]:
    """Queue a run with `values` (the current tenant's) and its key, if any."""
    columns = [*values, "idempotency_key"]
    for column in columns:
        assert column.isidentifier(), column  # names come from code, never from a request
    placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    row = await conn.fetchrow(
        f"""
        INSERT INTO {table.table} ({", ".join(columns)}) VALUES ({placeholders})
        RETURNING {returning}
        """,
        *values.values(),
        idempotency_key,
    )
    assert row is not None
    return dict(row)


async def take_key(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    idempotency_key: str,
    kind: str,
    run_id: UUID,
    request_hash: str,
) -> None:
    """Take `idempotency_key` for the run (UniqueViolation if any kind's run already has it)."""
    await conn.execute(
        """
        INSERT INTO job_idempotency_keys (tenant_id, idempotency_key, kind, run_id, request_hash)
        VALUES ($1, $2, $3, $4, $5)
        """,
        tenant_id,
        idempotency_key,
        kind,
        run_id,
        request_hash,
    )


async def key_holder(conn: asyncpg.Connection, idempotency_key: str) -> asyncpg.Record | None:
    """The run that took `idempotency_key` (the current tenant's): kind, run_id, request_hash."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT kind, run_id, request_hash FROM job_idempotency_keys WHERE idempotency_key = $1",
        idempotency_key,
    )
    return row


async def run_row(
    conn: asyncpg.Connection, table: JobTable, run_id: UUID, returning: str
) -> dict[str, Any] | None:
    """One run of the current tenant, as `returning` names its columns."""
    row = await conn.fetchrow(f"SELECT {returning} FROM {table.table} WHERE id = $1", run_id)
    return dict(row) if row is not None else None


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
