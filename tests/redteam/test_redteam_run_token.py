"""Red team, issue 14 round three: a claimed run's writes need its lease token, in the database.

Each test attacks as llm_app (a raw connection, the compromised session) against runs leased
the way the claim function leases them (a fresh token, the row keeping its sha256). Since
migration 012 llm_app may not UPDATE a run at all (refused: insufficient_privilege, where 010
skipped the row); the same attacks are made through 012's functions, which change nothing."""

from __future__ import annotations

import uuid
from uuid import UUID

import asyncpg
import pytest

from llm_service.tenants.service import CreatedTenant


async def _queued(owner: asyncpg.Pool, tenant_id: UUID) -> UUID:
    async with owner.acquire() as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps) VALUES ($1, 'why did spend rise?', 30, 60000, 8) RETURNING id",
            tenant_id,
        )
    return run_id


async def _lease(owner: asyncpg.Pool, run_id: UUID) -> UUID:
    """Lease (or take over) the run as fn_claim_next_run would: a fresh token."""
    token = uuid.uuid4()
    async with owner.acquire() as conn:
        await conn.execute(
            "UPDATE investigations SET status = 'running', lease_owner = 'w', "
            "lease_expires_at = now() + interval '1 minute', "
            "lease_token_hash = sha256(uuid_send($2::uuid)) WHERE id = $1",
            run_id,
            token,
        )
    return token


async def _row(owner: asyncpg.Pool, run_id: UUID) -> asyncpg.Record:
    async with owner.acquire() as conn:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT * FROM investigations WHERE id = $1", run_id
        )
    return row


async def _cancel_asked(owner: asyncpg.Pool, run_id: UUID) -> bool:
    """The run's cancel flag: its row's, or a request (migration 012: a running run's cancel
    is a row of run_cancel_requests, never a write of the run's row)."""
    asked: bool = await owner.fetchval(
        "SELECT cancel_requested OR EXISTS (SELECT 1 FROM run_cancel_requests q "
        "WHERE q.run_id = investigations.id) FROM investigations WHERE id = $1",
        run_id,
    )
    return asked


async def _events(owner: asyncpg.Pool, run_id: UUID) -> list[str]:
    async with owner.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_type FROM investigation_events WHERE investigation_id = $1 ORDER BY seq",
            run_id,
        )
    return [r["event_type"] for r in rows]


async def _as(conn: asyncpg.Connection, tenant_id: UUID, token: str | None) -> None:
    await conn.execute("SELECT set_config('app.current_tenant_id', $1, true)", str(tenant_id))
    if token is not None:
        await conn.execute("SELECT set_config('llm.run_token', $1, true)", token)


@pytest.mark.parametrize("forged", ["", "not-a-uuid", "00000000-0000-0000-0000-000000000000"])
async def test_forged_tokens_cannot_end_a_running_run(
    owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection, tenant: CreatedTenant, forged: str
) -> None:
    run_id = await _queued(owner_pool, tenant.tenant_id)
    await _lease(owner_pool, run_id)
    try:
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, forged)
            await app_conn.execute(
                "UPDATE investigations SET status = 'failed', lease_expires_at = now() "
                "WHERE id = $1",
                run_id,
            )
    except asyncpg.PostgresError:
        pass  # a malformed token is an error: also a refusal
    try:
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, forged)
            ended = await app_conn.fetchval(
                "SELECT fn_finish_investigation($1, 'w', 'failed', 'forged', 0, NULL, false)",
                run_id,
            )
        assert ended is None
    except asyncpg.PostgresError:
        pass
    assert (await _row(owner_pool, run_id))["status"] == "running"


async def test_another_runs_token_cannot_write_this_run(
    owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    mine = await _queued(owner_pool, tenant.tenant_id)
    theirs = await _queued(owner_pool, tenant.tenant_id)
    await _lease(owner_pool, mine)
    their_token = await _lease(owner_pool, theirs)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, str(their_token))
            await app_conn.execute(
                "UPDATE investigations SET status = 'failed' WHERE id = $1", mine
            )
    async with app_conn.transaction():
        await _as(app_conn, tenant.tenant_id, str(their_token))
        for kind in ("investigation", "budget_optimization"):
            assert not await app_conn.fetchval("SELECT fn_hand_back_run($1, $2, 'w')", kind, mine)
        ended = await app_conn.fetchval(
            "SELECT fn_finish_investigation($1, 'w', 'failed', 'x', 0, NULL, false)", mine
        )
        assert ended is None
    assert (await _row(owner_pool, mine))["status"] == "running"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, str(their_token))
            await app_conn.execute(
                "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
                "VALUES ($1, $2, 'step'), ($1, $3, 'step')",
                tenant.tenant_id,
                theirs,
                mine,
            )


async def test_cancel_cannot_carry_other_columns_or_be_lowered(
    owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    run_id = await _queued(owner_pool, tenant.tenant_id)
    await _lease(owner_pool, run_id)
    before = await _row(owner_pool, run_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, None)
            await app_conn.execute(
                "UPDATE investigations SET cancel_requested = true, status = 'cancelled', "
                "lease_expires_at = now() WHERE id = $1",
                run_id,
            )
    after = await _row(owner_pool, run_id)
    assert after["status"] == "running"
    assert after["lease_expires_at"] == before["lease_expires_at"]
    async with app_conn.transaction():  # the API's cancel (fn_cancel_investigation)
        await _as(app_conn, tenant.tenant_id, None)
        flagged = await app_conn.fetch(
            "SELECT status, cancel_requested, lease_expires_at FROM fn_cancel_investigation($1)",
            run_id,
        )
    assert [tuple(r) for r in flagged] == [("running", True, before["lease_expires_at"])]
    assert await _cancel_asked(owner_pool, run_id) is True
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, None)
            await app_conn.execute(
                "UPDATE investigations SET cancel_requested = false WHERE id = $1", run_id
            )
    assert await _cancel_asked(owner_pool, run_id) is True


async def test_a_queued_run_cannot_be_made_running_without_a_claim(
    owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    run_id = await _queued(owner_pool, tenant.tenant_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, None)
            await app_conn.execute(
                "UPDATE investigations SET status = 'running', lease_owner = 'evil', "
                "lease_expires_at = now() + interval '1 day' WHERE id = $1",
                run_id,
            )
    row = await _row(owner_pool, run_id)
    assert row["status"] == "queued"
    assert row["lease_owner"] is None


async def test_a_taken_over_worker_cannot_add_events_in_read_committed(
    owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    run_id = await _queued(owner_pool, tenant.tenant_id)
    old = await _lease(owner_pool, run_id)
    await _lease(owner_pool, run_id)  # the takeover: a new token
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, str(old))
            await app_conn.execute(
                "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
                "VALUES ($1, $2, 'step')",
                tenant.tenant_id,
                run_id,
            )


async def test_a_taken_over_worker_cannot_add_events_from_an_old_snapshot(
    owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    run_id = await _queued(owner_pool, tenant.tenant_id)
    old = await _lease(owner_pool, run_id)
    with pytest.raises(asyncpg.InvalidTransactionStateError):  # READ COMMITTED only (011)
        async with app_conn.transaction(isolation="repeatable_read"):
            await _as(app_conn, tenant.tenant_id, str(old))  # the snapshot is taken here
            await _lease(owner_pool, run_id)  # the takeover commits on another connection
            await app_conn.execute(
                "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
                "VALUES ($1, $2, 'step')",
                tenant.tenant_id,
                run_id,
            )
    assert "step" not in await _events(owner_pool, run_id)


async def test_a_terminal_run_is_never_rewritten(
    owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    run_id = await _queued(owner_pool, tenant.tenant_id)
    await _lease(owner_pool, run_id)
    async with owner_pool.acquire() as conn:
        await conn.execute(
            "UPDATE investigations SET status = 'succeeded', finished_at = now() WHERE id = $1",
            run_id,
        )
    before = await _row(owner_pool, run_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, None)
            await app_conn.execute(
                "UPDATE investigations SET cancel_requested = true WHERE id = $1", run_id
            )
    async with app_conn.transaction():
        await _as(app_conn, tenant.tenant_id, None)
        cancelled = await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", run_id)
    assert cancelled == []
    assert dict(await _row(owner_pool, run_id)) == dict(before)


async def test_events_naming_another_tenants_run_are_refused(
    owner_pool: asyncpg.Pool,
    app_conn: asyncpg.Connection,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    theirs = await _queued(owner_pool, other_tenant.tenant_id)
    token = await _lease(owner_pool, theirs)
    with pytest.raises(asyncpg.PostgresError):
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, str(token))
            await app_conn.execute(
                "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
                "VALUES ($1, $2, 'step')",
                tenant.tenant_id,
                theirs,
            )
    assert await _events(owner_pool, theirs) == []


async def test_an_idempotency_key_must_name_a_real_run(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    with pytest.raises(asyncpg.PostgresError):
        async with app_conn.transaction():
            await _as(app_conn, tenant.tenant_id, None)
            await app_conn.execute(
                "INSERT INTO job_idempotency_keys (tenant_id, idempotency_key, kind, run_id) "
                "VALUES ($1, 'k-ghost', 'investigation', $2)",
                tenant.tenant_id,
                uuid.uuid4(),
            )
