"""Migration 009 back-fills the keys runs already hold, and its downgrade gives 008 back.

Before 009 a key was unique per table: the same key could name an investigation AND a budget
job of one tenant. After it, the key names the earliest of them, for every kind; a retry of a
back-filled key (no request hash) is compared on the run's stored columns, as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest

from llm_service.db import migrate
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.errors import Conflict
from llm_service.investigations import repository as investigations
from llm_service.jobs import service as queueing
from llm_service.optimizations import repository as optimizations
from llm_service.tenants.service import create_tenant

PERIOD = {"start": "2025-01-01", "end": "2025-02-01"}
PARAMS = {"total_budget_usd": "10.00", "period": PERIOD, "model_type": "last_touch"}


async def _runs_at_008(owner: asyncpg.Pool, tenant_id: UUID, key: str) -> tuple[UUID, UUID]:
    """An investigation and, later, a budget job of one tenant holding the same key."""
    async with tenant_transaction(owner, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps, idempotency_key, created_at) "
            "VALUES ($1, 'Why?', 10, 30000, 12, $2, now() - interval '1 hour') RETURNING id",
            tenant_id,
            key,
        )
        job_id: UUID = await conn.fetchval(
            "INSERT INTO budget_optimization_jobs (tenant_id, params, idempotency_key) "
            "VALUES ($1, $2, $3) RETURNING id",
            tenant_id,
            PARAMS,
            key,
        )
    return run_id, job_id


async def test_keys_are_back_filled_and_a_retry_of_one_replays_on_its_stored_columns(
    scratch_database: Callable[[str], DatabaseUrls],
) -> None:
    urls = scratch_database("keys009")
    migrate.upgrade(urls.owner, "008_job_kit")
    owner = await create_pool(urls.owner, application_name="tests-009-owner", max_size=2)
    app = await create_pool(urls.app, application_name="tests-009-app", max_size=2)
    try:
        tenant = await create_tenant(owner, "backfill")
        other = await create_tenant(owner, "backfill-other")
        key = f"old-{uuid.uuid4().hex}"
        run_id, job_id = await _runs_at_008(owner, tenant.tenant_id, key)
        other_run, _ = await _runs_at_008(owner, other.tenant_id, key)

        migrate.upgrade(urls.owner)

        async with tenant_transaction(app, tenant.tenant_id) as conn:
            rows = await conn.fetch(
                "SELECT tenant_id, idempotency_key, kind, run_id, request_hash "
                "FROM job_idempotency_keys"
            )
        # One key per tenant: the earliest run (the investigation) holds it; no hash.
        assert [tuple(r) for r in rows] == [(tenant.tenant_id, key, "investigation", run_id, None)]
        stored = {
            "question": "Why?",
            "max_cost_cents": Decimal(10),
            "timeout_ms": 30000,
            "max_steps": 12,
        }

        async def queue_investigation(values: dict[str, object]) -> tuple[dict[str, object], bool]:
            async with tenant_transaction(app, tenant.tenant_id) as conn:
                return await queueing.queue(
                    conn,
                    investigations.TABLE,
                    {"tenant_id": tenant.tenant_id, **values},
                    key,
                    request={"anything": "not hashed before 009"},
                    returning=investigations.COLUMNS,
                    compared=stored,
                )

        row, created = await queue_investigation(stored)
        assert (row["id"], created) == (run_id, False)
        with pytest.raises(Conflict):
            await queue_investigation({**stored, "question": "Why not?"})
        # The budget job that shared the key before 009: a retry of it is now a 409.
        with pytest.raises(Conflict):
            async with tenant_transaction(app, tenant.tenant_id) as conn:
                await queueing.queue(
                    conn,
                    optimizations.TABLE,
                    {"tenant_id": tenant.tenant_id, "params": PARAMS},
                    key,
                    request=PARAMS,
                    returning=optimizations.COLUMNS,
                    compared=("params",),
                )
        async with tenant_transaction(app, other.tenant_id) as conn:
            theirs = await conn.fetch("SELECT kind, run_id FROM job_idempotency_keys")
        assert [tuple(r) for r in theirs] == [("investigation", other_run)]
        async with tenant_transaction(owner, tenant.tenant_id) as conn:
            jobs = await conn.fetchval(
                "SELECT count(*) FROM budget_optimization_jobs WHERE id = $1", job_id
            )
        assert jobs == 1  # the back-fill moved no run

        migrate.downgrade(urls.owner, "008_job_kit")
        assert migrate.current_revisions(urls.owner) == ["008_job_kit"]
        async with owner.acquire() as conn:
            gone = await conn.fetchval("SELECT to_regclass('job_idempotency_keys') IS NULL")
        assert gone
    finally:
        await app.close()
        await owner.close()
