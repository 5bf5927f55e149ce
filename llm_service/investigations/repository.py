"""Every query about investigations, their events and their evidence."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

TERMINAL_STATES = frozenset({"succeeded", "budget_exhausted", "timed_out", "failed", "cancelled"})

_COLUMNS = """id, status, reason, degraded, question, max_cost_cents, timeout_ms, max_steps,
    cost_cents, elapsed_ms, result, idempotency_key, attempts, cancel_requested, queued_at,
    started_at, finished_at, created_at"""


async def insert(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    question: str,
    max_cost_cents: Decimal,
    timeout_ms: int,
    max_steps: int,
    idempotency_key: str | None,
) -> tuple[dict[str, Any], bool]:
    """Queue a run; with an idempotency key already used, return that run (created=False)."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, max_steps,
                                    idempotency_key)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING {_COLUMNS}
        """,
        tenant_id,
        question,
        max_cost_cents,
        timeout_ms,
        max_steps,
        idempotency_key,
    )
    if row is not None:
        return dict(row), True
    existing = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM investigations WHERE idempotency_key = $1", idempotency_key
    )
    assert existing is not None
    return dict(existing), False


async def get(conn: asyncpg.Connection, run_id: UUID) -> dict[str, Any] | None:
    """One run of the current tenant (RLS hides every other tenant's)."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM investigations WHERE id = $1", run_id)
    return dict(row) if row else None


async def list_runs(
    conn: asyncpg.Connection, *, status: str | None, limit: int, before: Any | None
) -> list[dict[str, Any]]:
    """The tenant's runs, newest first, optionally by status, keyset-paged by created_at."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM investigations
        WHERE ($1::text IS NULL OR status = $1) AND ($2::timestamptz IS NULL OR created_at < $2)
        ORDER BY created_at DESC, id DESC LIMIT $3
        """,
        status,
        before,
        limit,
    )
    return [dict(r) for r in rows]


async def request_cancel(conn: asyncpg.Connection, run_id: UUID) -> dict[str, Any] | None:
    """Cancel a queued run at once; flag a running one for its worker. None if not found."""
    row = await conn.fetchrow(
        f"""
        UPDATE investigations
           SET cancel_requested = true,
               status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
               reason = CASE WHEN status = 'queued' THEN 'cancelled before it started'
                             ELSE reason END,
               finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END
         WHERE id = $1
        RETURNING {_COLUMNS}
        """,
        run_id,
    )
    return dict(row) if row else None


async def hand_back(conn: asyncpg.Connection, run_id: UUID, worker: str) -> bool:
    """End this worker's lease at once (shutdown): any worker may take the run over now."""
    done = await conn.execute(
        """
        UPDATE investigations SET lease_expires_at = now()
         WHERE id = $1 AND lease_owner = $2 AND status = 'running'
        """,
        run_id,
        worker,
    )
    return bool(done == "UPDATE 1")


async def heartbeat(
    conn: asyncpg.Connection, run_id: UUID, worker: str, lease_seconds: float
) -> bool | None:
    """Extend this worker's lease; returns cancel_requested, or None if the lease is no longer
    this worker's. (The run's spend is kept by the ledger: fn_llm_api_calls_run_spend.)"""
    result: bool | None = await conn.fetchval(
        """
        UPDATE investigations
           SET lease_expires_at = now() + make_interval(secs => $3), heartbeat_at = now()
         WHERE id = $1 AND lease_owner = $2 AND status = 'running'
        RETURNING cancel_requested
        """,
        run_id,
        worker,
        lease_seconds,
    )
    return result


async def finish(
    conn: asyncpg.Connection,
    run_id: UUID,
    worker: str,
    *,
    status: str,
    reason: str,
    elapsed_ms: int,
    result: dict[str, Any] | None,
    degraded: bool,
) -> Decimal | None:
    """Record a terminal state, if this worker still holds the run; returns the run's spend (the
    sum of its ledger rows, kept by the ledger), or None if the run was not this worker's."""
    assert status in TERMINAL_STATES
    spent: Decimal | None = await conn.fetchval(
        """
        UPDATE investigations
           SET status = $3, reason = $4, elapsed_ms = $5, result = $6,
               degraded = $7, finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1 AND lease_owner = $2 AND status = 'running'
        RETURNING cost_cents
        """,
        run_id,
        worker,
        status,
        reason,
        elapsed_ms,
        result,
        degraded,
    )
    return spent


async def add_event(
    conn: asyncpg.Connection, tenant_id: UUID, run_id: UUID, event_type: str, data: dict[str, Any]
) -> int:
    """Append a progress event; returns its sequence number."""
    seq: int = await conn.fetchval(
        """
        INSERT INTO investigation_events (tenant_id, investigation_id, event_type, data)
        VALUES ($1, $2, $3, $4) RETURNING seq
        """,
        tenant_id,
        run_id,
        event_type,
        data,
    )
    return seq


async def events_after(
    conn: asyncpg.Connection, run_id: UUID, after_seq: int, limit: int = 500
) -> list[dict[str, Any]]:
    """The run's events with a sequence number above `after_seq`, in order."""
    rows = await conn.fetch(
        """
        SELECT seq, event_type, data, created_at FROM investigation_events
        WHERE investigation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
        """,
        run_id,
        after_seq,
        limit,
    )
    return [dict(r) for r in rows]


async def tool_calls(conn: asyncpg.Connection, run_id: UUID) -> list[dict[str, Any]]:
    """The run's tool calls, in order."""
    rows = await conn.fetch(
        """
        SELECT id, step, tool_name, input_params, output, output_truncated, duration_ms, error,
               created_at
        FROM investigation_tool_calls WHERE investigation_id = $1 ORDER BY created_at, id
        """,
        run_id,
    )
    return [dict(r) for r in rows]


async def llm_calls(conn: asyncpg.Connection, run_id: UUID) -> list[dict[str, Any]]:
    """The run's provider calls with their exact costs, in order."""
    rows = await conn.fetch(
        """
        SELECT id, model, attempt, status, input_tokens, output_tokens, cost_cents,
               cost_is_estimate, latency_ms, started_at
        FROM llm_api_calls WHERE investigation_id = $1 ORDER BY started_at, attempt
        """,
        run_id,
    )
    return [dict(r) for r in rows]


async def spent_cents(conn: asyncpg.Connection, run_id: UUID) -> Decimal:
    """What the run's settled calls cost plus what its pending calls hold (worst case)."""
    value: Decimal = await conn.fetchval(
        """
        SELECT coalesce(sum(CASE WHEN status = 'pending' THEN reserved_cents
                                 ELSE cost_cents END), 0)
        FROM llm_api_calls WHERE investigation_id = $1
        """,
        run_id,
    )
    return value
