"""Red team, issue 14 round five: migration 011's widened run guards, attacked as llm_app.

Each test is one attack. Held: a plain passing test. Broke: xfail(strict) naming what broke.
Since migration 012 llm_app has no UPDATE privilege on runs and ledger rows: a raw UPDATE, or
a row lock of any strength, is refused (insufficient_privilege) where it used to be skipped;
the service writes them through 012's definer functions.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from budgets.ledger import Settlement
from llm_service.costs.ledger_repository import PgLedgerStore
from llm_service.db.pool import create_pool
from llm_service.db.urls import DatabaseUrls
from llm_service.investigations import repository as investigation_repository
from llm_service.investigations import service as investigation_service
from llm_service.tenants.service import CreatedTenant
from tests.helpers.app_role import (
    done_or_waiting,
    insert_pending,
    lease_run,
    lock_held,
    queued_job,
    queued_run,
    set_session_tenant,
)
from tests.helpers.waiting import wait_until

CANCELLED_QUEUED = "cancelled before it started"


async def _present(conn: asyncpg.Connection, token: uuid.UUID) -> None:
    """Present the token for the current transaction only, as the service does."""
    await conn.execute("SELECT set_config('llm.run_token', $1, true)", str(token))


async def _refused_lock(conn: asyncpg.Connection, table: str, row_id: uuid.UUID, lock: str) -> None:
    """The hostile session tries to lock the row (refused since migration 012: no UPDATE
    privilege), in a savepoint: its transaction stays open, as an attacker would keep it."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with conn.transaction():
            await conn.execute(f"SELECT 1 FROM {table} WHERE id = $1 FOR {lock}", row_id)


async def _settle(conn: asyncpg.Connection, call_id: uuid.UUID, cost: Decimal) -> bool:
    """As the gateway settles a call (in the open transaction, its token presented)."""
    return await PgLedgerStore(conn).settle_pending(call_id, Settlement("succeeded", cost), None)


async def _event(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, run_id: uuid.UUID, kind: str, data: object
) -> None:
    await conn.execute(
        "INSERT INTO investigation_events (tenant_id, investigation_id, event_type, data) "
        "VALUES ($1, $2, $3, $4::jsonb)",
        tenant_id,
        run_id,
        kind,
        json.dumps(data),
    )


async def _run(owner_pool: asyncpg.Pool, run_id: uuid.UUID) -> asyncpg.Record:
    row = await owner_pool.fetchrow(
        "SELECT status, lease_expires_at, finished_at, lease_token_hash "
        "FROM investigations WHERE id = $1",
        run_id,
    )
    assert row is not None
    return row


async def test_holder_cannot_null_the_lease_of_a_running_run(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # migration 012: no UPDATE at all
        async with app_conn.transaction():
            await _present(app_conn, token)
            await app_conn.execute(
                "UPDATE investigations SET lease_expires_at = NULL WHERE id = $1", run_id
            )
    row = await _run(owner_pool, run_id)
    assert row["status"] == "running"
    # The lease must still run out: a dead or hostile holder is taken over.
    assert row["lease_expires_at"] is not None


async def _renew(pool: asyncpg.Pool, token: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT run_id, renewed FROM fn_renew_leases('w', 60, $1::uuid[])", [token]
    )
    return rows


async def test_hostile_key_share_lock_does_not_starve_renewal(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    await set_session_tenant(other_app_conn, tenant_id)
    tx = other_app_conn.transaction()
    await tx.start()
    try:
        await _refused_lock(other_app_conn, "investigations", run_id, "KEY SHARE")
        await lock_held(owner_pool, other_app_conn.get_server_pid())
        rows = await _renew(app_pool, token)
        assert [(r["run_id"], r["renewed"]) for r in rows] == [(run_id, True)]
    finally:
        await tx.rollback()


async def test_hostile_no_key_update_lock_does_not_starve_renewal(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    await set_session_tenant(other_app_conn, tenant_id)
    tx = other_app_conn.transaction()
    await tx.start()
    try:
        await _refused_lock(other_app_conn, "investigations", run_id, "NO KEY UPDATE")
        await lock_held(owner_pool, other_app_conn.get_server_pid())
        rows = await _renew(app_pool, token)
        assert [(r["run_id"], r["renewed"]) for r in rows] == [(run_id, True)]
    finally:
        await tx.rollback()


async def test_renewal_passes_a_write_in_flight(
    app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    tx = app_conn.transaction()
    await tx.start()
    try:
        await _present(app_conn, token)
        await _event(app_conn, tenant_id, run_id, "step", {"n": 1})
        await lock_held(owner_pool, app_conn.get_server_pid())
        rows = await _renew(app_pool, token)
        assert [(r["run_id"], r["renewed"]) for r in rows] == [(run_id, True)]
    finally:
        await tx.rollback()


async def test_final_only_in_the_transaction_that_ended_the_run(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    await set_session_tenant(other_app_conn, tenant_id)
    early = other_app_conn.transaction()
    await early.start()
    try:
        await _present(other_app_conn, token)
        early_now: datetime = await other_app_conn.fetchval("SELECT now()")
        # A run ends as of now (fn_finish_investigation), never as of an earlier transaction:
        # the raw UPDATE that tried is refused outright (migration 012).
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with app_conn.transaction():
                await _present(app_conn, token)
                await app_conn.execute(
                    "UPDATE investigations SET status = 'succeeded', reason = 'done', "
                    "finished_at = $2, lease_owner = NULL, lease_expires_at = NULL WHERE id = $1",
                    run_id,
                    early_now,
                )
        assert (await _run(owner_pool, run_id))["status"] == "running"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _event(other_app_conn, tenant_id, run_id, "final", {"status": "succeeded"})
    finally:
        await early.rollback()


async def test_cancelled_final_needs_status_cancelled_and_is_once(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """NULL / odd data, savepoints: the API's token-less final of a run cancelled while queued."""
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    async with app_conn.transaction():
        cancelled = await investigation_repository.request_cancel(app_conn, run_id)
        assert cancelled is not None
        assert (cancelled["status"], cancelled["reason"]) == ("cancelled", CANCELLED_QUEUED)
        for data in (None, {}, {"status": None}, "cancelled", ["cancelled"], {"status": "failed"}):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with app_conn.transaction():  # a savepoint
                    await _event(app_conn, tenant_id, run_id, "final", data)
        # A final written in a savepoint that rolls back leaves room for the real one.
        with pytest.raises(RuntimeError):
            async with app_conn.transaction():
                await _event(app_conn, tenant_id, run_id, "final", {"status": "cancelled"})
                raise RuntimeError("roll the savepoint back")
        await _event(app_conn, tenant_id, run_id, "final", {"status": "cancelled"})
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with app_conn.transaction():
                await _event(app_conn, tenant_id, run_id, "final", {"status": "cancelled"})
    assert (await _run(owner_pool, run_id))["status"] == "cancelled"
    finals = await owner_pool.fetchval(
        "SELECT count(*) FROM investigation_events "
        "WHERE investigation_id = $1 AND event_type = 'final'",
        run_id,
    )
    assert finals == 1


async def test_idempotency_key_names_a_run_of_its_own_kind(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await app_conn.execute(
            "INSERT INTO job_idempotency_keys "
            "(tenant_id, idempotency_key, kind, run_id, request_hash) "
            "VALUES ($1, $2, 'budget_optimization', $3, $4)",
            tenant_id,
            f"k-{uuid.uuid4()}",
            run_id,
            "a" * 64,
        )
    await app_conn.execute(
        "INSERT INTO job_idempotency_keys "
        "(tenant_id, idempotency_key, kind, run_id, request_hash) "
        "VALUES ($1, $2, 'investigation', $3, $4)",
        tenant_id,
        f"k-{uuid.uuid4()}",
        run_id,
        "a" * 64,
    )


async def test_no_event_commits_after_the_final(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    await set_session_tenant(other_app_conn, tenant_id)
    step = app_conn.transaction()
    await step.start()
    await _present(app_conn, token)
    await _event(app_conn, tenant_id, run_id, "step", {"n": 1})

    async def end() -> None:  # the run's end (the timeout watch, say) in another session
        async with other_app_conn.transaction():
            await _finish_with_final(other_app_conn, tenant_id, run_id, token)

    task: asyncio.Task[None] = asyncio.ensure_future(end())
    try:
        ended_at_once = await done_or_waiting(owner_pool, task, other_app_conn.get_server_pid())
        await step.commit()
    finally:
        await task
    assert not ended_at_once  # the end waited for the step in flight
    events = await owner_pool.fetch(
        "SELECT event_type FROM investigation_events WHERE investigation_id = $1 ORDER BY seq",
        run_id,
    )
    # A reader that sees the final sees the run's whole story: nothing commits after it.
    assert [r["event_type"] for r in events][-2:] == ["step", "final"]


async def test_hostile_for_update_lock_does_not_stall_the_holders_writes(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    await set_session_tenant(other_app_conn, tenant_id)
    hostile = other_app_conn.transaction()
    await hostile.start()
    await _refused_lock(other_app_conn, "investigations", run_id, "UPDATE")
    await lock_held(owner_pool, other_app_conn.get_server_pid())

    async def write() -> None:
        async with app_conn.transaction():
            await _present(app_conn, token)
            await _event(app_conn, tenant_id, run_id, "step", {"n": 1})

    task: asyncio.Task[object] = asyncio.ensure_future(write())
    try:
        done = await done_or_waiting(owner_pool, task, app_conn.get_server_pid())
    finally:
        await hostile.rollback()
        await task
    assert done, "the holder's write waited on the hostile session's lock"


async def test_hostile_key_share_lock_does_not_starve_takeover(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    await lease_run(owner_pool, tenant_id, run_id)
    # The worker died: its lease ran out. The oldest queued_at: the first takeover candidate.
    await owner_pool.execute(
        "UPDATE investigations SET lease_expires_at = now() - interval '1 hour', "
        "queued_at = '2000-01-01' WHERE id = $1",
        run_id,
    )

    async def claim() -> uuid.UUID | None:
        async with app_pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:  # rolled back: the claim must not take other tests' runs
                claimed: uuid.UUID | None = await conn.fetchval(
                    "SELECT run_id FROM fn_claim_next_run('w2', 60, '{}', ARRAY['investigation'])"
                )
            finally:
                await tx.rollback()
        return claimed

    assert await claim() == run_id  # no lock held: the dead worker's run is taken over
    await set_session_tenant(other_app_conn, tenant_id)
    hostile = other_app_conn.transaction()
    await hostile.start()
    try:
        await _refused_lock(other_app_conn, "investigations", run_id, "KEY SHARE")
        await lock_held(owner_pool, other_app_conn.get_server_pid())
        assert await claim() == run_id
    finally:
        await hostile.rollback()


async def test_hostile_run_lock_does_not_hold_the_tenants_reservations(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    database_urls: DatabaseUrls,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    """The reserve trigger's sweep settles a run's expired call while the tenant's row is held:
    its spend trigger must not wait on a run a hostile session locked (held: the sweep counts
    the call at its reservation, no change to the run's spend)."""
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    async with app_conn.transaction():
        await _present(app_conn, token)
        # The worker's call, its reservation already expired (the worker died mid-call).
        expired = await insert_pending(
            app_conn, tenant_id, Decimal(1), expires="now()", investigation_id=run_id
        )
    await set_session_tenant(other_app_conn, tenant_id)
    hostile = other_app_conn.transaction()
    await hostile.start()
    await _refused_lock(other_app_conn, "investigations", run_id, "NO KEY UPDATE")
    await lock_held(owner_pool, other_app_conn.get_server_pid())
    honest = await asyncpg.connect(database_urls.app)
    try:
        await set_session_tenant(honest, tenant_id)
        # An explanation's reservation (no run) of the same tenant: it sweeps first.
        task: asyncio.Task[object] = asyncio.ensure_future(
            insert_pending(honest, tenant_id, Decimal(1))
        )
        try:
            done = await done_or_waiting(owner_pool, task, honest.get_server_pid())
        finally:
            await hostile.rollback()
            await task
    finally:
        await honest.close()
    assert done, "the tenant's reservation waited on the hostile session's run lock"
    swept = await owner_pool.fetchval("SELECT status FROM llm_api_calls WHERE id = $1", expired)
    assert swept == "abandoned"


async def _finish_with_final(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, run_id: uuid.UUID, token: uuid.UUID
) -> None:
    """As the runner's _record_finish: end the run and write its final, in the open transaction."""
    await _present(conn, token)
    spent = await investigation_repository.finish(
        conn,
        run_id,
        "w",
        token,
        status="timed_out",
        reason="out of time",
        elapsed_ms=1,
        result=None,
        degraded=False,
    )
    assert spent is not None
    await _event(conn, tenant_id, run_id, "final", {"status": "timed_out"})


async def _reserve(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, run_id: uuid.UUID, token: uuid.UUID
) -> uuid.UUID:
    async with conn.transaction():
        await _present(conn, token)
        return await insert_pending(conn, tenant_id, Decimal(2), investigation_id=run_id)


async def test_reservation_in_flight_then_the_end_do_not_deadlock(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    """Two sessions of one run: a step's reservation (tenant row, then the run's spend) is in
    flight when the timeout watch ends the run: the end waits for it, then ends the run."""
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    await set_session_tenant(other_app_conn, tenant_id)
    step = app_conn.transaction()
    await step.start()
    await _present(app_conn, token)
    call_id = await insert_pending(app_conn, tenant_id, Decimal(2), investigation_id=run_id)

    async def end() -> None:
        async with other_app_conn.transaction():
            await _finish_with_final(other_app_conn, tenant_id, run_id, token)

    task: asyncio.Task[object] = asyncio.ensure_future(end())
    try:
        ended_at_once = await done_or_waiting(owner_pool, task, other_app_conn.get_server_pid())
        await step.commit()
    finally:
        await task
    assert not ended_at_once  # the spend trigger's run lock holds the end off until commit
    row = await owner_pool.fetchrow(
        "SELECT status, cost_cents FROM investigations WHERE id = $1", run_id
    )
    assert (row["status"], row["cost_cents"]) == ("timed_out", Decimal(2))
    # The call reserved before the end is settled after it, with the token the run kept.
    async with app_conn.transaction():
        await _present(app_conn, token)
        assert await _settle(app_conn, call_id, Decimal(1))
    settled = await owner_pool.fetchrow(
        "SELECT c.status, r.cost_cents FROM llm_api_calls c "
        "JOIN investigations r ON r.id = c.investigation_id WHERE c.id = $1",
        call_id,
    )
    assert (settled["status"], settled["cost_cents"]) == ("succeeded", Decimal(1))


async def test_no_reservation_commits_after_the_end(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    await set_session_tenant(other_app_conn, tenant_id)
    end = other_app_conn.transaction()
    await end.start()
    await _finish_with_final(other_app_conn, tenant_id, run_id, token)
    task: asyncio.Task[uuid.UUID] = asyncio.ensure_future(
        _reserve(app_conn, tenant_id, run_id, token)
    )
    try:
        reserved_at_once = await done_or_waiting(owner_pool, task, app_conn.get_server_pid())
        await end.commit()
    finally:
        outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    assert not reserved_at_once  # it waited for the end (the spend trigger's run update)
    final_cost = await owner_pool.fetchval(
        "SELECT data FROM investigation_events WHERE investigation_id = $1 "
        "AND event_type = 'final'",
        run_id,
    )
    assert final_cost is not None
    assert isinstance(outcome, asyncpg.InsufficientPrivilegeError), outcome


async def test_settle_in_flight_and_the_end_do_not_deadlock(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    """The gateway settles (spend trigger: the run's row) while the run ends and writes its
    final in another session: the end waits for the settle, neither deadlocks."""
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    call_id = await _reserve(app_conn, tenant_id, run_id, token)
    await set_session_tenant(other_app_conn, tenant_id)
    settle = app_conn.transaction()
    await settle.start()
    await _present(app_conn, token)
    assert await _settle(app_conn, call_id, Decimal("1.5"))

    async def end() -> None:
        async with other_app_conn.transaction():
            await _finish_with_final(other_app_conn, tenant_id, run_id, token)

    task: asyncio.Task[object] = asyncio.ensure_future(end())
    try:
        ended_at_once = await done_or_waiting(owner_pool, task, other_app_conn.get_server_pid())
        await settle.commit()
    finally:
        await task
    assert not ended_at_once
    row = await owner_pool.fetchrow(
        "SELECT status, cost_cents FROM investigations WHERE id = $1", run_id
    )
    assert (row["status"], row["cost_cents"]) == ("timed_out", Decimal("1.5"))


API_SESSION = "rt14e-api"


@pytest.fixture
async def api_pool(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Pool]:
    """The API's pool, one connection, named so a test can see it wait for a lock."""
    pool = await create_pool(
        database_urls.app, application_name=API_SESSION, min_size=1, max_size=1
    )
    try:
        yield pool
    finally:
        await pool.close()


async def _apidone_or_waiting(owner_pool: asyncpg.Pool, task: asyncio.Task[Any]) -> bool:
    async def settled() -> bool:
        if task.done():
            return True
        waits = await owner_pool.fetchval(
            "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = $1",
            API_SESSION,
        )
        return bool(waits == "Lock")

    await wait_until(settled, "the API's cancel done or waiting for a lock")
    return task.done()


async def _finals(owner_pool: asyncpg.Pool, run_id: uuid.UUID) -> int:
    count: int = await owner_pool.fetchval(
        "SELECT count(*) FROM investigation_events "
        "WHERE investigation_id = $1 AND event_type = 'final'",
        run_id,
    )
    return count


async def test_api_cancel_racing_the_claim_flags_the_run(
    app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    api_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    """The API cancels a queued run while a claim has it locked: it waits, then (the run now
    running) raises the flag only, and writes no final."""
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    async with owner_pool.acquire() as claim:
        tx = claim.transaction()
        await tx.start()
        await claim.execute("SELECT 1 FROM investigations WHERE id = $1 FOR UPDATE", run_id)
        await claim.execute(
            "UPDATE investigations SET status = 'running', lease_owner = 'w', "
            "lease_expires_at = now() + interval '1 minute', "
            "lease_token_hash = sha256(uuid_send($2::uuid)) WHERE id = $1",
            run_id,
            uuid.uuid4(),
        )
        task: asyncio.Task[Any] = asyncio.ensure_future(
            investigation_service.cancel(api_pool, tenant_id, run_id)
        )
        try:
            assert not await _apidone_or_waiting(owner_pool, task)
        finally:
            await tx.commit()
            out = await task
    assert out.status == "running"
    flagged = await owner_pool.fetchval(  # the row's flag or a request (migration 012)
        "SELECT cancel_requested OR EXISTS (SELECT 1 FROM run_cancel_requests q "
        "WHERE q.run_id = investigations.id) FROM investigations WHERE id = $1",
        run_id,
    )
    assert flagged is True
    assert await _finals(owner_pool, run_id) == 0


async def test_api_cancel_racing_the_end_leaves_the_end(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    api_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    """The API cancels a running run while its end is in flight: it waits, then leaves the
    ended run as it is (one final, the end's)."""
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    await set_session_tenant(other_app_conn, tenant_id)
    end = other_app_conn.transaction()
    await end.start()
    await _finish_with_final(other_app_conn, tenant_id, run_id, token)
    task: asyncio.Task[Any] = asyncio.ensure_future(
        investigation_service.cancel(api_pool, tenant_id, run_id)
    )
    try:
        assert not await _apidone_or_waiting(owner_pool, task)
    finally:
        await end.commit()
        out = await task
    assert out.status == "timed_out"
    row = await owner_pool.fetchrow(
        "SELECT status, cancel_requested FROM investigations WHERE id = $1", run_id
    )
    assert (row["status"], row["cancel_requested"]) == ("timed_out", False)
    assert await _finals(owner_pool, run_id) == 1


async def test_optimisation_holder_cannot_null_its_lease(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tenant_id = tenant.tenant_id
    job_id = await queued_job(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, job_id, table="budget_optimization_jobs")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # migration 012: no UPDATE at all
        async with app_conn.transaction():
            await _present(app_conn, token)
            await app_conn.execute(
                "UPDATE budget_optimization_jobs SET lease_expires_at = NULL WHERE id = $1", job_id
            )
    row = await owner_pool.fetchrow(
        "SELECT status, lease_expires_at FROM budget_optimization_jobs WHERE id = $1", job_id
    )
    assert row["status"] == "running"
    assert row["lease_expires_at"] is not None


async def test_optimisation_rows_need_the_jobs_own_token(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """A job's ledger row with another run's token (an investigation's) is refused; with the
    job's own it is taken; a token-less update of the job is refused."""
    tenant_id = tenant.tenant_id
    job_id = await queued_job(app_conn, tenant_id)
    job_token = await lease_run(owner_pool, tenant_id, job_id, table="budget_optimization_jobs")
    run_id = await queued_run(app_conn, tenant_id)
    run_token = await lease_run(owner_pool, tenant_id, run_id)

    async def job_row(token: uuid.UUID) -> None:
        async with app_conn.transaction():
            await _present(app_conn, token)
            await app_conn.execute(
                "INSERT INTO llm_api_calls (tenant_id, request_id, endpoint, model, provider, "
                "reserved_cents, reservation_expires_at, max_tokens, budget_optimization_job_id) "
                "VALUES ($1, $2, 'budget_optimizations', 'gpt-4o-mini', 'openai', 1, "
                "now() + interval '5 minutes', 100, $3)",
                tenant_id,
                str(uuid.uuid4()),
                job_id,
            )

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await job_row(run_token)
    await job_row(job_token)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # migration 012: no UPDATE at all
        await app_conn.execute(
            "UPDATE budget_optimization_jobs SET status = 'cancelled', reason = $2, "
            "finished_at = now() WHERE id = $1",
            job_id,
            CANCELLED_QUEUED,
        )
    row = await owner_pool.fetchrow(
        "SELECT status, cost_cents FROM budget_optimization_jobs WHERE id = $1", job_id
    )
    assert (row["status"], row["cost_cents"]) == ("running", Decimal(1))


async def test_queued_only_by_the_creating_transaction_once(
    app_conn: asyncpg.Connection,
    other_app_conn: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    """The API's create writes `queued` once; no other transaction (earlier-started, or a
    later one under another time zone) writes it, and a token-less no-op rewrites nothing."""
    tenant_id = tenant.tenant_id
    await set_session_tenant(other_app_conn, tenant_id)
    early = other_app_conn.transaction()
    await early.start()
    try:
        await other_app_conn.fetchval("SELECT now()")  # its now() is fixed: before the create
        async with app_conn.transaction():
            run_id = await queued_run(app_conn, tenant_id)
            await _event(app_conn, tenant_id, run_id, "queued", {})
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with app_conn.transaction():
                    await _event(app_conn, tenant_id, run_id, "queued", {})
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _event(other_app_conn, tenant_id, run_id, "queued", {})
    finally:
        await early.rollback()
    before = await owner_pool.fetchval(
        "SELECT updated_at FROM investigations WHERE id = $1", run_id
    )
    async with app_conn.transaction():
        await app_conn.execute("SET LOCAL timezone = 'Pacific/Kiritimati'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _event(app_conn, tenant_id, run_id, "queued", {})
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # migration 012: no UPDATE at all
        async with app_conn.transaction():
            await app_conn.execute("SET LOCAL timezone = 'Pacific/Kiritimati'")
            await app_conn.execute(
                "UPDATE investigations SET finished_at = finished_at, "
                "heartbeat_at = heartbeat_at, reason = reason, "
                "cancel_requested = cancel_requested WHERE id = $1",
                run_id,
            )
    after = await owner_pool.fetchval("SELECT updated_at FROM investigations WHERE id = $1", run_id)
    assert after == before
    queued = await owner_pool.fetchval(
        "SELECT count(*) FROM investigation_events "
        "WHERE investigation_id = $1 AND event_type = 'queued'",
        run_id,
    )
    assert queued == 1


async def test_settle_checked_before_a_takeover_does_not_land_after_it(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    token = await lease_run(owner_pool, tenant_id, run_id)
    call_id = await _reserve(app_conn, tenant_id, run_id, token)
    async with owner_pool.acquire() as claim:
        # A takeover in flight, as fn_claim_next_run makes it: the row locked, a new token.
        takeover = claim.transaction()
        await takeover.start()
        await claim.execute("SELECT 1 FROM investigations WHERE id = $1 FOR UPDATE", run_id)
        await claim.execute(
            "UPDATE investigations SET lease_owner = 'w2', "
            "lease_expires_at = now() + interval '1 minute', "
            "lease_token_hash = sha256(uuid_send($2::uuid)) WHERE id = $1",
            run_id,
            uuid.uuid4(),
        )

        async def settle() -> bool:
            async with app_conn.transaction():
                await _present(app_conn, token)
                return await _settle(app_conn, call_id, Decimal(1))

        task: asyncio.Task[bool] = asyncio.ensure_future(settle())
        try:
            settled_at_once = await done_or_waiting(owner_pool, task, app_conn.get_server_pid())
        finally:
            await takeover.commit()
            outcome = await task
    assert not settled_at_once  # the settle waited for the takeover's row lock
    assert outcome is False
    status = await owner_pool.fetchval("SELECT status FROM llm_api_calls WHERE id = $1", call_id)
    # The old holder's token is not the run's when its settle commits: left to the sweep.
    assert status == "pending", outcome


async def test_token_less_rescale_rides_no_cancel(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """Without the token, raising the cancel flag while rewriting a result numerically equal
    (1 -> 1.00: equal as jsonb, not as stored text) changes nothing."""
    tenant_id = tenant.tenant_id
    run_id = await queued_run(app_conn, tenant_id)
    await lease_run(owner_pool, tenant_id, run_id)
    # A result the run holds (written as the owner: since migration 012 the holder writes a
    # result only as it ends the run).
    await owner_pool.execute(
        "UPDATE investigations SET result = '{\"score\": 1}' WHERE id = $1", run_id
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # migration 012: no UPDATE at all
        await app_conn.execute(
            "UPDATE investigations SET cancel_requested = true, result = '{\"score\": 1.00}' "
            "WHERE id = $1",
            run_id,
        )
    row = await owner_pool.fetchrow(
        "SELECT result::text AS result, cancel_requested FROM investigations WHERE id = $1",
        run_id,
    )
    assert (row["result"], row["cancel_requested"]) == ('{"score": 1}', False)


async def test_idempotency_key_of_another_tenant_is_refused(
    app_conn: asyncpg.Connection, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    """A key naming another tenant's run: as that tenant (row-level security) or as ours (no
    run of ours)."""
    theirs = await queued_run(app_conn, other_tenant.tenant_id)
    await set_session_tenant(app_conn, tenant.tenant_id)
    insert = (
        "INSERT INTO job_idempotency_keys (tenant_id, idempotency_key, kind, run_id, "
        "request_hash) VALUES ($1, $2, 'investigation', $3, $4)"
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            insert, other_tenant.tenant_id, f"k-{uuid.uuid4()}", theirs, "b" * 64
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await app_conn.execute(insert, tenant.tenant_id, f"k-{uuid.uuid4()}", theirs, "b" * 64)


async def test_app_role_cannot_become_a_role_the_guards_pass(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool
) -> None:
    """The guards pass every role but llm_app (current_user): llm_app may become none."""
    roles = await owner_pool.fetch(
        "SELECT r.rolname FROM pg_roles r WHERE pg_has_role('llm_app', r.oid, 'MEMBER') "
        "AND r.rolname <> 'llm_app'"
    )
    assert [r["rolname"] for r in roles] == []
    for role in ("llm_crosstenant", await owner_pool.fetchval("SELECT current_user")):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.execute(f'SET ROLE "{role}"')
