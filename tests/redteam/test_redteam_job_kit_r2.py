"""Red team, issue 14 round two: lease tokens attacked as the application role (llm_app).

Runs are queued as llm_app and leased as fn_claim_next_run would (a fresh token, the row keeping
its sha256) by the owner, so no other test's run is claimed from the shared queue.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.investigations import repository as investigations
from llm_service.jobs import repository as jobs
from llm_service.tenants.service import CreatedTenant
from tests.helpers.app_role import insert_pending, set_session_tenant


async def _leased_run(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant_id: UUID, worker: str
) -> tuple[UUID, UUID]:
    async with tenant_transaction(app_pool, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps) VALUES ($1, 'why did revenue fall', 30, 60000, 8) RETURNING id",
            tenant_id,
        )
    token = uuid.uuid4()
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        await conn.execute(
            "UPDATE investigations SET status = 'running', lease_owner = $2, "
            "lease_expires_at = now() + interval '1 minute', "
            "lease_token_hash = sha256(uuid_send($3::uuid)) WHERE id = $1",
            run_id,
            worker,
            token,
        )
    return run_id, token


async def test_app_role_cannot_write_the_token_hash(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id, _ = await _leased_run(app_pool, owner_pool, tenant.tenant_id, "w1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "UPDATE investigations SET lease_token_hash = sha256('x'::bytea) WHERE id = $1",
                run_id,
            )


async def test_renewal_with_a_guessed_token_renews_nothing(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id, token = await _leased_run(app_pool, owner_pool, tenant.tenant_id, "w1")
    async with app_pool.acquire() as conn:
        guessed = await jobs.renew_leases(conn, "w1", 30, [uuid.uuid4(), uuid.UUID(int=0)])
        wrong_worker = await jobs.renew_leases(conn, "w2", 30, [token])
        right = await jobs.renew_leases(conn, "w1", 30, [token])
    assert guessed == {} and wrong_worker == {}
    assert set(right) == {run_id}


async def test_a_run_cannot_be_ended_without_its_token(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id, _ = await _leased_run(app_pool, owner_pool, tenant.tenant_id, "w1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # migration 012: no UPDATE at all
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "UPDATE investigations SET status = 'succeeded', "
                'result = \'{"summary": "forged"}\', finished_at = now() WHERE id = $1',
                run_id,
            )
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        done = await conn.fetchval(
            "SELECT fn_finish_investigation($1, 'w1', 'succeeded', 'forged', 0, "
            '\'{"summary": "forged"}\', false)',
            run_id,
        )
    assert done is None


async def test_a_lease_cannot_be_expired_without_its_token(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id, _ = await _leased_run(app_pool, owner_pool, tenant.tenant_id, "w1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # migration 012: no UPDATE at all
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "UPDATE investigations SET lease_expires_at = now() - interval '1 hour' "
                "WHERE id = $1",
                run_id,
            )
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        done = await conn.fetchval("SELECT fn_hand_back_run('investigation', $1, 'w1')", run_id)
    assert done is False


async def test_stale_token_cannot_finish_after_takeover(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id, old = await _leased_run(app_pool, owner_pool, tenant.tenant_id, "w1")
    new = uuid.uuid4()
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute(
            "UPDATE investigations SET lease_owner = 'w1', "
            "lease_token_hash = sha256(uuid_send($2::uuid)) WHERE id = $1",
            run_id,
            new,
        )
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        spent = await investigations.finish(
            conn, run_id, "w1", old, status="succeeded", reason="stale", elapsed_ms=1,
            result={"summary": "stale"}, degraded=False,
        )  # fmt: skip
        handed = await jobs.hand_back(conn, investigations.TABLE, run_id, "w1", old)
    assert spent is None and handed is False


async def test_stale_worker_events_are_refused_after_takeover(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id, _old = await _leased_run(app_pool, owner_pool, tenant.tenant_id, "w1")
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute(
            "UPDATE investigations SET lease_owner = 'w2', "
            "lease_token_hash = sha256(uuid_send($2::uuid)) WHERE id = $1",
            run_id,
            uuid.uuid4(),
        )
    with pytest.raises(asyncpg.PostgresError):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await investigations.add_event(conn, tenant.tenant_id, run_id, "note", {"m": "x"})


async def test_app_role_cannot_rewrite_or_drop_a_taken_key(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id, _ = await _leased_run(app_pool, owner_pool, tenant.tenant_id, "w1")
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        await jobs.take_key(conn, tenant.tenant_id, "k-rt14", "investigation", run_id, "a" * 64)
    for statement in (
        "UPDATE job_idempotency_keys SET run_id = gen_random_uuid()",
        "DELETE FROM job_idempotency_keys",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
                await conn.execute(statement)


async def test_app_role_cannot_take_a_key_for_another_tenant(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # RLS WITH CHECK
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await jobs.take_key(
                conn, other_tenant.tenant_id, "k-x", "investigation", uuid.uuid4(), "b" * 64
            )


async def test_stale_worker_ledger_rows_are_refused_after_takeover(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    app_conn: asyncpg.Connection,
) -> None:
    run_id, _old = await _leased_run(app_pool, owner_pool, tenant.tenant_id, "w1")
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute(
            "UPDATE investigations SET lease_owner = 'w2', "
            "lease_token_hash = sha256(uuid_send($2::uuid)) WHERE id = $1",
            run_id,
            uuid.uuid4(),
        )
    await set_session_tenant(app_conn, tenant.tenant_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await insert_pending(app_conn, tenant.tenant_id, Decimal(1), investigation_id=run_id)
