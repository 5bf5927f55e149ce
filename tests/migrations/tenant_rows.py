"""Minimal valid rows for every tenant table, and the catalog queries that find those tables.

A row builder inserts (through `conn`, inside a transaction whose tenant is already set) at least
one valid row of its table for `tenant_id`, creating the parent rows its foreign keys need. A new
tenant table without a builder here makes the isolation tests fail with "add a row builder".
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from llm_service.db.pool import tenant_transaction

RowBuilder = Callable[[asyncpg.Connection, UUID], Awaitable[None]]

#: Every table in public with a tenant_id column (tenants itself is isolated on its id).
TENANT_ID_TABLES_SQL = """
SELECT c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
              AND a.attnum > 0 AND NOT a.attisdropped)
ORDER BY 1
"""

PUBLIC_TABLES_SQL = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1
"""


def tenant_column(table: str) -> str:
    """The column a table's tenant isolation is keyed on."""
    return "id" if table == "tenants" else "tenant_id"


async def discover_tenant_tables(conn: asyncpg.Connection) -> list[str]:
    """Tables holding a tenant's rows: every table with tenant_id, plus tenants."""
    tables = [r["relname"] for r in await conn.fetch(TENANT_ID_TABLES_SQL)]
    return sorted([*tables, "tenants"])


def _key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def insert_event(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    revenue_cents: int = 100,
    raw_payload: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> UUID:
    """A purchase event (revenue 100 cents by default)."""
    event_id: UUID = await conn.fetchval(
        """INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type,
               channel, revenue_cents, raw_payload, idempotency_key)
           VALUES ($1, now(), now(), 'purchase', 'facebook_paid', $2, $3, $4) RETURNING id""",
        tenant_id,
        revenue_cents,
        raw_payload or {},
        idempotency_key or _key("evt"),
    )
    return event_id


async def insert_allocation(
    conn: asyncpg.Connection, tenant_id: UUID, event_id: UUID, cents: int = 100
) -> UUID:
    """One last-touch allocation of the whole revenue of a 100-cent event."""
    allocation_id: UUID = await conn.fetchval(
        """INSERT INTO attribution_allocations (tenant_id, event_id, channel_code,
               allocated_revenue_cents, allocation_ratio, model_type, confidence_score)
           VALUES ($1, $2, 'facebook_paid', $3, 1, 'last_touch', 0.9) RETURNING id""",
        tenant_id,
        event_id,
        cents,
    )
    return allocation_id


async def insert_ledger(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    metadata: dict[str, Any] | None = None,
    state: str = "captured",
) -> UUID:
    """A captured ledger entry of 100 cents."""
    ledger_id: UUID = await conn.fetchval(
        """INSERT INTO revenue_ledger (tenant_id, transaction_id, order_id, state, amount_cents,
               revenue_cents, metadata)
           VALUES ($1, $2, 'order-1', $3, 100, 100, $4) RETURNING id""",
        tenant_id,
        _key("txn"),
        state,
        metadata or {},
    )
    return ledger_id


async def insert_dead_event(
    conn: asyncpg.Connection, tenant_id: UUID, *, raw_payload: dict[str, Any] | None = None
) -> UUID:
    """A dead event awaiting remediation."""
    dead_id: UUID = await conn.fetchval(
        """INSERT INTO dead_events (tenant_id, source, error_type, error_message, raw_payload)
           VALUES ($1, 'webhook', 'ValidationError', 'bad payload', $2) RETURNING id""",
        tenant_id,
        raw_payload or {},
    )
    return dead_id


async def insert_investigation(
    conn: asyncpg.Connection, tenant_id: UUID, *, idempotency_key: str | None = None
) -> UUID:
    """A queued investigation."""
    investigation_id: UUID = await conn.fetchval(
        """INSERT INTO investigations (tenant_id, question, idempotency_key)
           VALUES ($1, 'Why did ROAS drop last week?', $2) RETURNING id""",
        tenant_id,
        idempotency_key,
    )
    return investigation_id


async def insert_llm_call(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    model: str = "gpt-4o-mini",
    endpoint: str = "explanations",
    started_at: datetime | None = None,
) -> UUID:
    """A pending (reserved, unsettled) provider call; backdated only by the owner (`started_at`
    decides the month, so the application role cannot write it)."""
    columns = "tenant_id, request_id, endpoint, model, provider, reserved_cents, "
    columns += "reservation_expires_at" + (", started_at" if started_at else "")
    values = "$1, $2, $3, $4, 'openai', 100, now() + interval '5 minutes'"
    values += ", $5" if started_at else ""
    args: tuple[object, ...] = (tenant_id, _key("req"), endpoint, model)
    call_id: UUID = await conn.fetchval(
        f"INSERT INTO llm_api_calls ({columns}) VALUES ({values}) RETURNING id",
        *args,
        *((started_at,) if started_at else ()),
    )
    return call_id


async def _tenants(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    # The tenant's own row already exists (tenants are created by the service).
    assert await conn.fetchval("SELECT count(*) FROM tenants WHERE id = $1", tenant_id) == 1


async def _attribution_events(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await insert_event(conn, tenant_id)


async def _attribution_allocations(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await insert_allocation(conn, tenant_id, await insert_event(conn, tenant_id))


async def _reconciliation_runs(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await conn.execute("INSERT INTO reconciliation_runs (tenant_id) VALUES ($1)", tenant_id)


async def _revenue_ledger(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    allocation_id = await insert_allocation(conn, tenant_id, await insert_event(conn, tenant_id))
    run_id = await conn.fetchval(
        "INSERT INTO reconciliation_runs (tenant_id) VALUES ($1) RETURNING id", tenant_id
    )
    await conn.execute(
        """INSERT INTO revenue_ledger (tenant_id, transaction_id, state, amount_cents,
               revenue_cents, allocation_id, reconciliation_run_id)
           VALUES ($1, $2, 'authorized', 100, 100, $3, $4)""",
        tenant_id,
        _key("txn"),
        allocation_id,
        run_id,
    )


async def _revenue_state_transitions(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    ledger_id = await insert_ledger(conn, tenant_id)
    await conn.execute(
        """INSERT INTO revenue_state_transitions (tenant_id, ledger_id, from_state, to_state)
           VALUES ($1, $2, 'authorized', 'captured')""",
        tenant_id,
        ledger_id,
    )


async def _dead_events(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await insert_dead_event(conn, tenant_id)


async def _channel_assignment_corrections(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await conn.execute(
        """INSERT INTO channel_assignment_corrections (tenant_id, entity_type, entity_id,
               from_channel, to_channel, corrected_by)
           VALUES ($1, 'event', $2, 'facebook_paid', 'instagram_paid', 'analyst')""",
        tenant_id,
        await insert_event(conn, tenant_id),
    )


async def _pii_audit_findings(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await conn.execute(
        """INSERT INTO pii_audit_findings (tenant_id, source, detected_key, redacted_snippet)
           VALUES ($1, 'llm_guard', 'email', '[REDACTED:email]')""",
        tenant_id,
    )


async def _llm_api_calls(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await insert_llm_call(conn, tenant_id)


async def _llm_monthly_costs(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    # Only the settlement trigger writes this table; the owner may seed it directly.
    await conn.execute(
        "INSERT INTO llm_monthly_costs (tenant_id, month) VALUES ($1, '2020-01-01')", tenant_id
    )


async def _investigations(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await insert_investigation(conn, tenant_id)


async def _investigation_tool_calls(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await conn.execute(
        """INSERT INTO investigation_tool_calls (tenant_id, investigation_id, tool_name)
           VALUES ($1, $2, 'channel_performance')""",
        tenant_id,
        await insert_investigation(conn, tenant_id),
    )


async def _investigation_events(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await conn.execute(
        """INSERT INTO investigation_events (tenant_id, investigation_id, event_type)
           VALUES ($1, $2, 'queued')""",
        tenant_id,
        await insert_investigation(conn, tenant_id),
    )


async def _explanation_cache(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await conn.execute(
        """INSERT INTO explanation_cache (tenant_id, entity_type, scope_key, scope,
               embedding_model, embedding_dim, explanation, model, prompt_version,
               data_fingerprint, expires_at)
           VALUES ($1, 'channel', repeat('a', 64), '{}'::jsonb, 'test/model', 3,
                   '{"text": "ok"}'::jsonb, 'gpt-4o-mini', 'v1', 'fp', now() + interval '1 day')""",
        tenant_id,
    )


async def _budget_optimization_jobs(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await conn.execute(
        "INSERT INTO budget_optimization_jobs (tenant_id, params) VALUES ($1, '{}'::jsonb)",
        tenant_id,
    )


async def _job_idempotency_keys(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    run_id = await insert_investigation(conn, tenant_id)
    await conn.execute(
        """INSERT INTO job_idempotency_keys (tenant_id, idempotency_key, kind, run_id,
                                             request_hash)
           VALUES ($1, $2, 'investigation', $3, repeat('a', 64))""",
        tenant_id,
        _key("job"),
        run_id,
    )


async def _run_cancel_requests(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    # Written by fn_cancel_investigation for a running run (migration 012); the owner seeds it.
    run_id = await insert_investigation(conn, tenant_id)
    await conn.execute(
        "INSERT INTO run_cancel_requests (tenant_id, run_id, kind) "
        "VALUES ($1, $2, 'investigation')",
        tenant_id,
        run_id,
    )


async def _llm_validation_failures(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await conn.execute(
        """INSERT INTO llm_validation_failures (tenant_id, endpoint, validation_error)
           VALUES ($1, 'explanations', 'missing citations')""",
        tenant_id,
    )


async def _data_change_journal(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    # Only the definer triggers write the journal: an event journals its day and channel.
    await insert_event(conn, tenant_id)
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM data_change_journal WHERE tenant_id = $1 AND part = 'events' "
            "AND day = (now() AT TIME ZONE 'UTC')::date AND channel = 'facebook_paid'",
            tenant_id,
        )
        == 1
    )


async def _pii_scan_queue(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    # Only the definer triggers write the queue: an event with a payload queues itself.
    event_id = await insert_event(conn, tenant_id, raw_payload={"utm": {"source": "x"}})
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM pii_scan_queue WHERE tenant_id = $1 AND record_id = $2"
            " AND source_table = 'attribution_events'",
            tenant_id,
            event_id,
        )
        == 1
    )


ROW_BUILDERS: dict[str, RowBuilder] = {
    "tenants": _tenants,
    "attribution_events": _attribution_events,
    "attribution_allocations": _attribution_allocations,
    "reconciliation_runs": _reconciliation_runs,
    "revenue_ledger": _revenue_ledger,
    "revenue_state_transitions": _revenue_state_transitions,
    "dead_events": _dead_events,
    "channel_assignment_corrections": _channel_assignment_corrections,
    "pii_audit_findings": _pii_audit_findings,
    "llm_api_calls": _llm_api_calls,
    "llm_monthly_costs": _llm_monthly_costs,
    "investigations": _investigations,
    "investigation_tool_calls": _investigation_tool_calls,
    "investigation_events": _investigation_events,
    "explanation_cache": _explanation_cache,
    "budget_optimization_jobs": _budget_optimization_jobs,
    "job_idempotency_keys": _job_idempotency_keys,
    "run_cancel_requests": _run_cancel_requests,
    "llm_validation_failures": _llm_validation_failures,
    "data_change_journal": _data_change_journal,
    "pii_scan_queue": _pii_scan_queue,
}


def row_builder(table: str) -> RowBuilder:
    """The builder for `table`, or a clear failure naming what to add."""
    try:
        return ROW_BUILDERS[table]
    except KeyError:
        raise AssertionError(
            f"add a row builder for table {table} in tests/migrations/tenant_rows.py "
            "(every tenant table must be covered by the cross-tenant isolation tests)"
        ) from None


async def seed_every_tenant_table(
    owner_pool: asyncpg.Pool, tables: list[str], tenant_ids: list[UUID]
) -> None:
    """As the owner, with each tenant set in turn, insert rows into every table for it."""
    for tenant_id in tenant_ids:
        for table in tables:
            builder = row_builder(table)
            async with tenant_transaction(owner_pool, tenant_id) as conn:
                await builder(conn, tenant_id)
