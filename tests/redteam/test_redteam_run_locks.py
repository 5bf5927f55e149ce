"""Red team, issue 14 round six: row locks on runs and ledger rows, attacked as llm_app.

A compromised application-role session (no lease token) must not hold any row lock on a run or
a ledger row in an open transaction: not directly (SELECT ... FOR <lock>), not through a
foreign key (an insert into a table referencing a run takes KEY SHARE on it), not through the
definer functions of migration 012 (each locks a row only for a caller entitled to change it).
Whether a row is locked is probed as the owner with FOR UPDATE NOWAIT, which every lock
strength blocks; a positive control shows the probe sees the holder's own lock.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import asyncpg
import pytest

from budgets.ledger import Settlement
from llm_service.costs.ledger_repository import PgLedgerStore
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

LOCKED_TABLES = ("investigations", "budget_optimization_jobs", "llm_api_calls")
LOCKS = ("UPDATE", "NO KEY UPDATE", "SHARE", "KEY SHARE")


@pytest.fixture
def hostile(other_app_conn: asyncpg.Connection) -> asyncpg.Connection:
    """The attacker's raw llm_app session, with no lease token."""
    return other_app_conn


async def _running_run(
    conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID]:
    """A claimed investigation of the session's tenant (set here) and its lease token."""
    run_id = await queued_run(conn, tenant_id)
    return run_id, await lease_run(owner_pool, tenant_id, run_id)


async def _running_job(
    conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID]:
    """A claimed budget optimisation job of the session's tenant and its lease token."""
    job_id = await queued_job(conn, tenant_id)
    return job_id, await lease_run(owner_pool, tenant_id, job_id, table="budget_optimization_jobs")


async def _present(conn: asyncpg.Connection, token: uuid.UUID) -> None:
    await conn.execute("SELECT set_config('llm.run_token', $1, true)", str(token))


async def _pending_call(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, run_id: uuid.UUID, token: uuid.UUID
) -> uuid.UUID:
    """The run's holder reserves a call (committed): a pending ledger row of the run."""
    async with conn.transaction():
        await _present(conn, token)
        return await insert_pending(conn, tenant_id, Decimal(2), investigation_id=run_id)


async def _lockable_at_once(owner_pool: asyncpg.Pool, table: str, row_id: uuid.UUID) -> bool:
    """True when no other transaction holds any lock on the row (the owner's probe)."""
    async with owner_pool.acquire() as conn:
        try:
            async with conn.transaction():
                await conn.execute(f"SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE NOWAIT", row_id)
        except asyncpg.LockNotAvailableError:
            return False
    return True


async def test_app_role_has_no_update_privilege_on_runs_or_ledger_rows(
    owner_pool: asyncpg.Pool,
) -> None:
    """Any UPDATE privilege (table or one column) would let llm_app lock the table's rows."""
    columns = await owner_pool.fetch(
        "SELECT table_name, column_name FROM information_schema.column_privileges "
        "WHERE grantee = 'llm_app' AND privilege_type = 'UPDATE' "
        "AND table_name = ANY ($1::text[])",
        list(LOCKED_TABLES),
    )
    assert [tuple(r) for r in columns] == []
    for table in LOCKED_TABLES:
        flags = await owner_pool.fetchrow(
            "SELECT has_table_privilege('llm_app', $1, 'UPDATE') AS upd, "
            "has_any_column_privilege('llm_app', $1, 'UPDATE') AS any_upd, "
            "has_any_column_privilege('llm_app', $1, 'INSERT') AS ins",
            table,
        )
        assert (flags["upd"], flags["any_upd"], flags["ins"]) == (False, False, True), table


@pytest.mark.parametrize("lock", LOCKS)
async def test_no_lock_strength_on_a_run_job_or_ledger_row(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant: CreatedTenant, lock: str
) -> None:
    tenant_id = tenant.tenant_id
    run_id, token = await _running_run(app_conn, owner_pool, tenant_id)
    job_id, _ = await _running_job(app_conn, owner_pool, tenant_id)
    call_id = await _pending_call(app_conn, tenant_id, run_id, token)
    rows = {"investigations": run_id, "budget_optimization_jobs": job_id, "llm_api_calls": call_id}
    for table, row_id in rows.items():
        for skip in ("", " SKIP LOCKED", " NOWAIT"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with app_conn.transaction():
                    await _present(app_conn, token)  # not even the holder: it has no need
                    await app_conn.execute(
                        f"SELECT 1 FROM {table} WHERE id = $1 FOR {lock}{skip}", row_id
                    )


async def test_hostile_lock_of_a_pending_ledger_row_does_not_stall_its_settle(
    app_conn: asyncpg.Connection,
    hostile: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tenant_id = tenant.tenant_id
    run_id, token = await _running_run(app_conn, owner_pool, tenant_id)
    call_id = await _pending_call(app_conn, tenant_id, run_id, token)
    await set_session_tenant(hostile, tenant_id)
    tx = hostile.transaction()
    await tx.start()
    try:
        for lock in LOCKS:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with hostile.transaction():  # a savepoint: the transaction stays open
                    await hostile.execute(
                        f"SELECT 1 FROM llm_api_calls WHERE id = $1 FOR {lock}", call_id
                    )
        # Nor through the settle function: without the run's token it settles (and locks)
        # nothing.
        assert not await PgLedgerStore(hostile).settle_pending(
            call_id, Settlement("succeeded", Decimal(0)), None
        )
        await lock_held(owner_pool, hostile.get_server_pid())
        assert await _lockable_at_once(owner_pool, "llm_api_calls", call_id)
        assert await _lockable_at_once(owner_pool, "investigations", run_id)

        async def settle() -> bool:
            async with app_conn.transaction():
                await _present(app_conn, token)
                return await PgLedgerStore(app_conn).settle_pending(
                    call_id, Settlement("succeeded", Decimal("1.25")), None
                )

        task: asyncio.Task[bool] = asyncio.ensure_future(settle())
        try:
            done = await done_or_waiting(owner_pool, task, app_conn.get_server_pid())
        finally:
            settled = await task
    finally:
        await tx.rollback()
    assert done, "the holder's settle waited on the hostile session"
    assert settled is True
    row = await owner_pool.fetchrow(
        "SELECT status, cost_cents FROM llm_api_calls WHERE id = $1", call_id
    )
    assert (row["status"], row["cost_cents"]) == ("succeeded", Decimal("1.25"))


async def test_every_table_referencing_a_run_or_a_ledger_row_is_insert_guarded(
    owner_pool: asyncpg.Pool,
) -> None:
    """A foreign key's check takes KEY SHARE on the row it references (as the owner): every
    referencing table must refuse llm_app's token-less insert before it (a BEFORE guard), and
    give llm_app no UPDATE (an update of the key column checks it again). A new referencing
    table fails here until it is guarded and attacked below."""
    referencing = await owner_pool.fetch(
        "SELECT c.conrelid::regclass::text AS tbl, c.confrelid::regclass::text AS target "
        "FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = ANY ($1::regclass[]) "
        "ORDER BY 1",
        list(LOCKED_TABLES),
    )
    assert [(r["tbl"], r["target"]) for r in referencing] == [
        ("investigation_events", "investigations"),
        ("investigation_tool_calls", "investigations"),
    ]
    for r in referencing:
        guarded = await owner_pool.fetchval(
            "SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = $1::regclass "
            "AND t.tgfoid = 'fn_run_insert_needs_lease'::regproc AND NOT t.tgisinternal "
            # BEFORE (2) INSERT (4), enabled
            "AND t.tgenabled = 'O' AND (t.tgtype & 2) <> 0 AND (t.tgtype & 4) <> 0",
            r["tbl"],
        )
        assert guarded == 1, r["tbl"]
        assert not await owner_pool.fetchval(
            "SELECT has_any_column_privilege('llm_app', $1, 'UPDATE')", r["tbl"]
        ), r["tbl"]


def _inserts(tenant_id: uuid.UUID, run_id: uuid.UUID) -> dict[str, tuple[str, tuple[object, ...]]]:
    """Each insert that names the run: into every table referencing it, and a ledger row."""
    event = (
        "INSERT INTO investigation_events (tenant_id, investigation_id, event_type, data) "
        "VALUES ($1, $2, $3, $4::jsonb)"
    )
    return {
        "step event": (event, (tenant_id, run_id, "step", "{}")),
        "final event": (event, (tenant_id, run_id, "final", json.dumps({"status": "cancelled"}))),
        "queued event": (event, (tenant_id, run_id, "queued", "{}")),
        "tool call": (
            "INSERT INTO investigation_tool_calls (tenant_id, investigation_id, tool_name) "
            "VALUES ($1, $2, 'channel_performance')",
            (tenant_id, run_id),
        ),
        "ledger row": (
            "INSERT INTO llm_api_calls (tenant_id, request_id, endpoint, model, provider, "
            "reserved_cents, reservation_expires_at, max_tokens, investigation_id) "
            "VALUES ($1, gen_random_uuid()::text, 'investigations', 'gpt-4o-mini', 'openai', 1, "
            "now() + interval '5 minutes', 100, $2)",
            (tenant_id, run_id),
        ),
    }


@pytest.mark.parametrize("insert", list(_inserts(uuid.uuid4(), uuid.uuid4())))
async def test_a_refused_insert_leaves_no_lock_on_the_run(
    app_conn: asyncpg.Connection,
    hostile: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    insert: str,
) -> None:
    tenant_id = tenant.tenant_id
    run_id, token = await _running_run(app_conn, owner_pool, tenant_id)
    _, other_token = await _running_run(app_conn, owner_pool, tenant_id)
    sql, args = _inserts(tenant_id, run_id)[insert]
    await set_session_tenant(hostile, tenant_id)
    tx = hostile.transaction()
    await tx.start()
    try:
        for presented in (None, other_token):  # no token, another run's token
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with hostile.transaction():
                    if presented is not None:
                        await _present(hostile, presented)
                    await hostile.execute(sql, *args)
        await lock_held(owner_pool, hostile.get_server_pid())
        assert await _lockable_at_once(owner_pool, "investigations", run_id)
    finally:
        await tx.rollback()
    # The positive control: the holder's own write holds the run until it commits.
    if insert in ("step event", "tool call", "ledger row"):
        holder = app_conn.transaction()
        await holder.start()
        try:
            await _present(app_conn, token)
            await app_conn.execute(sql, *args)
            assert not await _lockable_at_once(owner_pool, "investigations", run_id)
        finally:
            await holder.rollback()


async def test_the_definer_functions_lock_nothing_without_the_token(
    app_conn: asyncpg.Connection,
    hostile: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    """Each of migration 012's functions, called by a session without the run's token (and
    once with another run's), changes nothing and leaves every row unlocked."""
    tenant_id = tenant.tenant_id
    run_id, token = await _running_run(app_conn, owner_pool, tenant_id)
    job_id, _ = await _running_job(app_conn, owner_pool, tenant_id)
    _, other_token = await _running_run(app_conn, owner_pool, tenant_id)
    call_id = await _pending_call(app_conn, tenant_id, run_id, token)
    await set_session_tenant(hostile, tenant_id)
    tx = hostile.transaction()
    await tx.start()
    try:
        await _present(hostile, other_token)
        answers = [
            await hostile.fetchval(
                "SELECT fn_finish_investigation($1, 'w', 'failed', 'x', 1, NULL, false)", run_id
            ),
            await hostile.fetchval(
                "SELECT fn_finish_optimization($1, 'w', 'failed', 'x', NULL, NULL, false)", job_id
            ),
            await hostile.fetchval("SELECT fn_hand_back_run('investigation', $1, 'w')", run_id),
            await hostile.fetchval(
                "SELECT fn_hand_back_run('budget_optimization', $1, 'w')", job_id
            ),
            await PgLedgerStore(hostile).settle_pending(
                call_id, Settlement("failed", Decimal(0)), None
            ),
            await hostile.fetchval("SELECT fn_run_write_lock($1, NULL, NULL, NULL)", run_id),
            await hostile.fetchval("SELECT fn_run_write_lock(NULL, $1, NULL, NULL)", job_id),
            await hostile.fetchval(
                "SELECT fn_run_write_lock($1, NULL, 'final', 'cancelled')", run_id
            ),
            await hostile.fetchval("SELECT fn_run_write_lock($1, NULL, 'queued', NULL)", run_id),
        ]
        assert answers == [None, False, False, False, False, False, False, False, False]
        await lock_held(owner_pool, hostile.get_server_pid())
        for table, row_id in (
            ("investigations", run_id),
            ("budget_optimization_jobs", job_id),
            ("llm_api_calls", call_id),
        ):
            assert await _lockable_at_once(owner_pool, table, row_id), table
    finally:
        await tx.rollback()
    run = await owner_pool.fetchrow(
        "SELECT status, lease_expires_at > now() AS leased FROM investigations WHERE id = $1",
        run_id,
    )
    assert (run["status"], run["leased"]) == ("running", True)
    call = await owner_pool.fetchval("SELECT status FROM llm_api_calls WHERE id = $1", call_id)
    assert call == "pending"


async def test_another_tenants_session_with_the_token_changes_nothing(
    app_conn: asyncpg.Connection,
    hostile: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    """The definer's policy sees every tenant: the functions check the tenant themselves."""
    run_id, token = await _running_run(app_conn, owner_pool, tenant.tenant_id)
    call_id = await _pending_call(app_conn, tenant.tenant_id, run_id, token)
    await set_session_tenant(hostile, other_tenant.tenant_id)
    async with hostile.transaction():
        await _present(hostile, token)
        assert (
            await hostile.fetchval("SELECT count(*) FROM fn_cancel_investigation($1)", run_id) == 0
        )
        assert not await hostile.fetchval(
            "SELECT fn_hand_back_run('investigation', $1, 'w')", run_id
        )
        assert not await PgLedgerStore(hostile).settle_pending(
            call_id, Settlement("failed", Decimal(0)), None
        )
        assert not await hostile.fetchval("SELECT fn_run_write_lock($1, NULL, NULL, NULL)", run_id)
        assert (
            await hostile.fetchval(
                "SELECT fn_finish_investigation($1, 'w', 'failed', 'x', 1, NULL, false)", run_id
            )
            is None
        )
    row = await owner_pool.fetchrow(
        "SELECT r.status, r.cancel_requested, c.status AS call FROM investigations r "
        "JOIN llm_api_calls c ON c.investigation_id = r.id WHERE c.id = $1",
        call_id,
    )
    assert (row["status"], row["cancel_requested"], row["call"]) == ("running", False, "pending")


async def test_a_run_ends_in_a_terminal_state_only(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id, token = await _running_run(app_conn, owner_pool, tenant.tenant_id)
    job_id, job_token = await _running_job(app_conn, owner_pool, tenant.tenant_id)
    for status in ("queued", "running", None, "paused"):
        with pytest.raises(asyncpg.InvalidParameterValueError):
            async with app_conn.transaction():
                await _present(app_conn, token)
                await app_conn.fetchval(
                    "SELECT fn_finish_investigation($1, 'w', $2, 'x', 1, NULL, false)",
                    run_id,
                    status,
                )
        with pytest.raises(asyncpg.InvalidParameterValueError):
            async with app_conn.transaction():
                await _present(app_conn, job_token)
                await app_conn.fetchval(
                    "SELECT fn_finish_optimization($1, 'w', $2, 'x', NULL, NULL, false)",
                    job_id,
                    status,
                )
    assert (
        await owner_pool.fetchval("SELECT status FROM investigations WHERE id = $1", run_id)
        == "running"
    )


async def test_the_cancel_flag_of_a_running_run_is_raised_once(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """The API's cancel of a running run raises the flag only; a second cancel rewrites
    nothing (updated_at unchanged), and a terminal run is left as it is."""
    run_id, _ = await _running_run(app_conn, owner_pool, tenant.tenant_id)
    first = await app_conn.fetch(
        "SELECT status, cancel_requested FROM fn_cancel_investigation($1)", run_id
    )
    assert [tuple(r) for r in first] == [("running", True)]
    before = await owner_pool.fetchval(
        "SELECT updated_at FROM investigations WHERE id = $1", run_id
    )
    assert await app_conn.fetchval("SELECT count(*) FROM fn_cancel_investigation($1)", run_id) == 0
    after = await owner_pool.fetchval("SELECT updated_at FROM investigations WHERE id = $1", run_id)
    assert after == before
    await owner_pool.execute(
        "UPDATE investigations SET status = 'succeeded', finished_at = now() WHERE id = $1", run_id
    )
    assert await app_conn.fetchval("SELECT count(*) FROM fn_cancel_investigation($1)", run_id) == 0


async def test_a_cancel_held_open_does_not_starve_renewal(
    app_conn: asyncpg.Connection,
    hostile: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    run_id, token = await _running_run(app_conn, owner_pool, tenant.tenant_id)
    await set_session_tenant(hostile, tenant.tenant_id)
    tx = hostile.transaction()
    await tx.start()
    try:
        flagged = await hostile.fetch("SELECT id FROM fn_cancel_investigation($1)", run_id)
        assert [r["id"] for r in flagged] == [run_id]
        await lock_held(owner_pool, hostile.get_server_pid())
        rows = await app_pool.fetch(
            "SELECT run_id, renewed FROM fn_renew_leases('w', 60, $1::uuid[])", [token]
        )
        assert [(r["run_id"], r["renewed"]) for r in rows] == [(run_id, True)]
    finally:
        await tx.rollback()


async def test_a_cancel_held_open_leaves_the_run_lockable_and_requests_are_the_definers(
    app_conn: asyncpg.Connection,
    hostile: asyncpg.Connection,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    """Migration 012: a running run's cancel keeps no lock on the run (its wait for a write in
    flight is a lock taken and released at once), so even the claim's FOR UPDATE gets the row;
    llm_app writes and locks no request itself; a request is made only for a running run of
    the session's tenant."""
    run_id, _ = await _running_run(app_conn, owner_pool, tenant.tenant_id)
    theirs, _ = await _running_run(app_conn, owner_pool, other_tenant.tenant_id)
    await set_session_tenant(hostile, tenant.tenant_id)
    tx = hostile.transaction()
    await tx.start()
    try:
        flagged = await hostile.fetch("SELECT id FROM fn_cancel_investigation($1)", run_id)
        assert [r["id"] for r in flagged] == [run_id]
        assert await _lockable_at_once(owner_pool, "investigations", run_id)
        for missing in (theirs, uuid.uuid4()):
            assert await hostile.fetch("SELECT * FROM fn_cancel_investigation($1)", missing) == []
        for sql in (
            "INSERT INTO run_cancel_requests (tenant_id, run_id, kind) "
            f"VALUES ('{tenant.tenant_id}', '{uuid.uuid4()}', 'investigation')",
            f"DELETE FROM run_cancel_requests WHERE run_id = '{run_id}'",
            "UPDATE run_cancel_requests SET requested_at = now()",
            "SELECT 1 FROM run_cancel_requests FOR KEY SHARE",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with hostile.transaction():  # a savepoint: the transaction stays open
                    await hostile.execute(sql)
    finally:
        await tx.rollback()
    requests = await owner_pool.fetchval(
        "SELECT count(*) FROM run_cancel_requests WHERE run_id = ANY($1::uuid[])", [run_id, theirs]
    )
    assert requests == 0  # the hostile transaction's own request went with it
