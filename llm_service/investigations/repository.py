"""Every query about investigations, their events and their evidence (the queue's own queries,
shared with every job kind, are in `llm_service.jobs.repository`)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from llm_service.db.queries import present_run_token
from llm_service.jobs import repository as jobs
from llm_service.jobs.kinds import JobTable

TABLE = JobTable("investigation", "investigations", ledger_column="investigation_id")
TERMINAL_STATES = frozenset({"succeeded", "budget_exhausted", "timed_out", "failed", "cancelled"})

# A running run's cancel request is a row of its own, not the run's flag (migration 012).
COLUMNS = """id, status, reason, degraded, question, max_cost_cents, timeout_ms, max_steps,
    cost_cents, elapsed_ms, result, idempotency_key, attempts,
    (cancel_requested OR fn_run_cancel_requested(id)) AS cancel_requested, queued_at,
    started_at, finished_at, created_at"""


async def get(conn: asyncpg.Connection, run_id: UUID) -> dict[str, Any] | None:
    """One run of the current tenant (RLS hides every other tenant's)."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM investigations WHERE id = $1", run_id)
    return dict(row) if row else None


async def list_runs(
    conn: asyncpg.Connection, *, status: str | None, limit: int, before: Any | None
) -> list[dict[str, Any]]:
    """The tenant's runs, newest first, optionally by status, keyset-paged by created_at."""
    rows = await conn.fetch(
        f"""
        SELECT {COLUMNS} FROM investigations
        WHERE ($1::text IS NULL OR status = $1) AND ($2::timestamptz IS NULL OR created_at < $2)
        ORDER BY created_at DESC, id DESC LIMIT $3
        """,
        status,
        before,
        limit,
    )
    return [dict(r) for r in rows]


async def request_cancel(conn: asyncpg.Connection, run_id: UUID) -> dict[str, Any] | None:
    """Cancel a queued run at once; flag a running one for its worker. None if not found, or
    ended, or flagged already (migration 012's fn_cancel_investigation: the one transition)."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM fn_cancel_investigation($1)", run_id)
    return dict(row) if row else None


async def finish(
    conn: asyncpg.Connection,
    run_id: UUID,
    worker: str,
    lease_token: UUID,
    *,
    status: str,
    reason: str,
    elapsed_ms: int,
    result: dict[str, Any] | None,
    degraded: bool,
) -> Decimal | None:
    """Record a terminal state as of now, if this worker still holds the run (its lease token;
    the run locked first, so writes in flight commit before it); returns the run's spend (the
    sum of its ledger rows), or None if the run was not this worker's."""
    assert status in TERMINAL_STATES
    await present_run_token(conn, lease_token)
    spent: Decimal | None = await conn.fetchval(
        "SELECT fn_finish_investigation($1, $2, $3, $4, $5, $6, $7)",
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


async def add_events(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    run_id: UUID,
    events: Sequence[tuple[str, dict[str, Any]]],
) -> None:
    """Append progress events in one statement, their sequence numbers in the given order."""
    await conn.execute(
        """
        INSERT INTO investigation_events (tenant_id, investigation_id, event_type, data)
        SELECT $1, $2, e.event_type, e.data
        FROM unnest($3::text[], $4::jsonb[]) WITH ORDINALITY AS e(event_type, data, n)
        ORDER BY e.n
        """,
        tenant_id,
        run_id,
        [event_type for event_type, _ in events],
        [data for _, data in events],
    )


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
    return await jobs.llm_calls(conn, TABLE, run_id)


async def spent_cents(conn: asyncpg.Connection, run_id: UUID) -> Decimal:
    """What the run's settled calls cost plus what its pending calls hold (worst case)."""
    return await jobs.spent_cents(conn, TABLE, run_id)


async def active_channels(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The active channels of the taxonomy (code, display name, family, paid), by code."""
    return list(
        await conn.fetch(
            "SELECT code, display_name, family, is_paid FROM channel_taxonomy"
            " WHERE is_active ORDER BY code"
        )
    )
