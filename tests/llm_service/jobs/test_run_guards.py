"""Migration 011's run guards beside the lease keeping: a holder's limits, a busy run's renewal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import pytest

from llm_service.tenants.service import CreatedTenant
from tests.helpers.app_role import lease_run


@pytest.fixture
async def app_conn(app_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """One application-role connection of the service's pool."""
    async with app_pool.acquire() as conn:
        yield conn


async def _queued(owner: asyncpg.Pool, tenant_id: UUID) -> UUID:
    run_id: UUID = await owner.fetchval(
        "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, max_steps) "
        "VALUES ($1, 'why did spend rise?', 30, 60000, 8) RETURNING id",
        tenant_id,
    )
    return run_id


async def _present(conn: asyncpg.Connection, tenant_id: UUID, token: UUID) -> None:
    """The tenant and the run's token, for the open transaction only (the connection is pooled:
    a session-level setting would reach later tests' transactions on it)."""
    await conn.execute(
        "SELECT set_config('app.current_tenant_id', $1, true), "
        "set_config('llm.run_token', $2, true)",
        str(tenant_id),
        str(token),
    )


async def test_the_holder_can_neither_queue_its_run_again_nor_move_its_lease_later(
    owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    run_id = await _queued(owner_pool, tenant.tenant_id)
    token = await lease_run(owner_pool, tenant.tenant_id, run_id)
    before = await owner_pool.fetchrow(
        "SELECT status, lease_expires_at FROM investigations WHERE id = $1", run_id
    )
    for change in (
        "status = 'queued'",
        "lease_expires_at = 'infinity'",
        "lease_expires_at = lease_expires_at + interval '1 second'",
        "lease_expires_at = now()",  # even the hand-back: only through fn_hand_back_run
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # migration 012: no UPDATE
            async with app_conn.transaction():
                await _present(app_conn, tenant.tenant_id, token)
                await app_conn.execute(f"UPDATE investigations SET {change} WHERE id = $1", run_id)
    after = await owner_pool.fetchrow(
        "SELECT status, lease_expires_at FROM investigations WHERE id = $1", run_id
    )
    assert dict(after) == dict(before)
    async with app_conn.transaction():  # handing it back (the lease ends now) is the holder's
        await _present(app_conn, tenant.tenant_id, token)
        done = await app_conn.fetchval("SELECT fn_hand_back_run('investigation', $1, 'w')", run_id)
    assert done is True


async def test_a_run_with_a_write_in_flight_is_still_renewed(
    owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    run_id = await _queued(owner_pool, tenant.tenant_id)
    token = await lease_run(owner_pool, tenant.tenant_id, run_id, worker="w")
    async with app_conn.transaction():  # the run's own step, not yet committed
        await _present(app_conn, tenant.tenant_id, token)
        await app_conn.execute(
            "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
            "VALUES ($1, $2, 'step')",
            tenant.tenant_id,
            run_id,
        )
        renewed = await owner_pool.fetch(
            "SELECT run_id, renewed FROM fn_renew_leases('w', 60, $1::uuid[])", [token]
        )
    assert [(r["run_id"], r["renewed"]) for r in renewed] == [(run_id, True)]
