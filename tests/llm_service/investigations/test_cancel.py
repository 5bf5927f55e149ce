"""Cancelling a run while another transaction ends it: the answer is the run's real end.

Each test holds the run's row in a second transaction (the racing cancel, or the worker
finishing), lets the service's cancel queue behind it, and then commits the holder."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import UUID

import asyncpg

from llm_service.investigations import repository, service
from llm_service.investigations.schemas import InvestigationOut
from llm_service.tenants.service import CreatedTenant
from tests.helpers.waiting import wait_until


async def _queued(owner: asyncpg.Pool, tenant_id: UUID) -> UUID:
    run_id: UUID = await owner.fetchval(
        "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, max_steps) "
        "VALUES ($1, 'why did spend rise?', 30, 60000, 8) RETURNING id",
        tenant_id,
    )
    return run_id


async def _finals(owner: asyncpg.Pool, run_id: UUID) -> int:
    count: int = await owner.fetchval(
        "SELECT count(*) FROM investigation_events "
        "WHERE investigation_id = $1 AND event_type = 'final'",
        run_id,
    )
    return count


async def _cancel_behind(
    owner: asyncpg.Pool,
    app: asyncpg.Pool,
    tenant_id: UUID,
    run_id: UUID,
    holder: asyncpg.Connection,
    commit_holder: Callable[[], Awaitable[object]],
) -> InvestigationOut:
    """The service's cancel, queued behind `holder`'s lock on the run, then the holder commits."""
    cancelling = asyncio.create_task(service.cancel(app, tenant_id, run_id))

    async def waiting_on_the_row() -> bool:
        blocked: int = await owner.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%fn_cancel_investigation%' AND pid <> $1",
            holder.get_server_pid(),
        )
        return blocked > 0

    await wait_until(waiting_on_the_row, "the cancel waits on the held run")
    await commit_holder()
    return await cancelling


async def test_a_cancel_racing_another_cancel_adds_no_second_final_event(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id = await _queued(owner_pool, tenant.tenant_id)
    async with app_pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await holder.execute(
            "SELECT set_config('app.current_tenant_id', $1, true)", str(tenant.tenant_id)
        )
        first = await repository.request_cancel(holder, run_id)
        assert first is not None and first["status"] == "cancelled"
        await repository.add_event(
            holder, tenant.tenant_id, run_id, "final", {"status": "cancelled"}
        )
        out = await _cancel_behind(
            owner_pool, app_pool, tenant.tenant_id, run_id, holder, tx.commit
        )
    assert out.status == "cancelled"
    assert await _finals(owner_pool, run_id) == 1


async def test_a_cancel_of_a_run_that_ended_meanwhile_answers_its_end_and_leaves_it(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id = await _queued(owner_pool, tenant.tenant_id)
    await owner_pool.execute(
        "UPDATE investigations SET status = 'running', started_at = now() WHERE id = $1", run_id
    )
    async with owner_pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await holder.execute(
            "UPDATE investigations SET status = 'succeeded', finished_at = now(), "
            "reason = 'answered' WHERE id = $1",
            run_id,
        )
        out = await _cancel_behind(
            owner_pool, app_pool, tenant.tenant_id, run_id, holder, tx.commit
        )
    assert out.status == "succeeded"
    row = await owner_pool.fetchrow(
        "SELECT status, cancel_requested FROM investigations WHERE id = $1", run_id
    )
    assert (row["status"], row["cancel_requested"]) == ("succeeded", False)
    assert await _finals(owner_pool, run_id) == 0
