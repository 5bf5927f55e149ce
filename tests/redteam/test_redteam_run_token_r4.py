"""Red team, issue 14 round four: a run's writes need its lease token, in the database.

The attacker holds the application role (llm_app) and writes through the grants it really has,
on a raw connection (`app_conn`) or through the service's own pool. Round three tried forged
and foreign tokens, cancels carrying other columns, un-cancelling and old snapshots; this round
tries what it did not: session-level tokens on pooled connections, jsonb equality, UPDATE ...
FROM, ON CONFLICT, COPY, the optimisation kind, other isolation levels, idempotency keys of the
wrong tenant or kind, tokens held by tasks that outlive their run, DELETE / TRUNCATE,
session_replication_role, run rows inserted directly, and a write in flight across a takeover.
Since migration 012 llm_app may not UPDATE a run or a ledger row at all: the raw updates below
are refused (insufficient_privilege) where 010/011's guards skipped the row, and the same ends
are tried through 012's functions (fn_finish_investigation, ...), which change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from llm_service.db.pool import create_pool, presenting_run_token, tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.investigations import repository as investigation_repository
from llm_service.jobs.kinds import Claim
from llm_service.tenants.service import CreatedTenant
from tests.helpers.app_role import lease_run, present_session_token, set_session_tenant

pytestmark = pytest.mark.asyncio


# --- set-up: runs queued as the API would, leased as the claim would ---------------------------
@contextlib.asynccontextmanager
async def _holding(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, token: uuid.UUID
) -> AsyncIterator[asyncpg.Connection]:
    """A tenant transaction presenting the run's token, as the run's own task opens one."""
    with presenting_run_token(token):
        async with tenant_transaction(pool, tenant_id) as conn:
            yield conn


_END_WITHOUT_THE_LEASE = (
    "SELECT fn_finish_investigation($1, 'w', 'failed', 'ended by a request', 0, NULL, false)"
)


async def _raw_update_refused(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, sql: str, *args: Any
) -> None:
    """A raw UPDATE of a run in a tenant transaction: refused since migration 012."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(pool, tenant_id) as conn:
            await conn.execute(sql, *args)


async def _end(conn: asyncpg.Connection, run_id: uuid.UUID, token: uuid.UUID) -> None:
    """The honest end of a run by its holder (the service's repository)."""
    spent = await investigation_repository.finish(
        conn, run_id, "w", token, status="succeeded", reason="done", elapsed_ms=1,
        result={}, degraded=False,
    )  # fmt: skip
    assert spent is not None


async def _queue_investigation(app_pool: asyncpg.Pool, tenant_id: uuid.UUID) -> uuid.UUID:
    async with tenant_transaction(app_pool, tenant_id) as conn:
        run_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question) VALUES ($1, 'why?') RETURNING id",
            tenant_id,
        )
    return run_id


async def _queue_job(app_pool: asyncpg.Pool, tenant_id: uuid.UUID) -> uuid.UUID:
    async with tenant_transaction(app_pool, tenant_id) as conn:
        job_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO budget_optimization_jobs (tenant_id, params) VALUES ($1, $2) RETURNING id",
            tenant_id,
            {"total_budget_cents": 1000},
        )
    return job_id


async def _row(owner_pool: asyncpg.Pool, table: str, run_id: uuid.UUID) -> dict[str, Any]:
    assert table in ("investigations", "budget_optimization_jobs")
    async with owner_pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT * FROM {table} WHERE id = $1", run_id)
    assert row is not None
    return dict(row)


async def _count(owner_pool: asyncpg.Pool, sql: str, *args: object) -> int:
    async with owner_pool.acquire() as conn:
        n: int = await conn.fetchval(sql, *args)
    return n


async def _insert_call(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    *,
    investigation_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    endpoint: str = "investigations",
    reserved: Decimal = Decimal(1),
) -> None:
    await conn.execute(
        "INSERT INTO llm_api_calls (tenant_id, request_id, endpoint, model, provider, "
        "reserved_cents, reservation_expires_at, max_tokens, investigation_id, "
        "budget_optimization_job_id) VALUES ($1, $2, $3, 'gpt-4o-mini', 'openai', $4, "
        "now() + interval '5 minutes', 100, $5, $6)",
        tenant_id,
        uuid.uuid4().hex,
        endpoint,
        reserved,
        investigation_id,
        job_id,
    )


@pytest.fixture
async def one_conn_pool(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Pool]:
    """The service's own pool, with one connection: every checkout is the same session."""
    pool = await create_pool(database_urls.app, application_name="rt14d", min_size=1, max_size=1)
    yield pool
    await pool.close()


# --- session-level tokens and pooled connections ------------------------------------------------


async def test_a_session_level_token_does_not_reach_a_later_pooled_transaction(
    one_conn_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, run_id)
    async with one_conn_pool.acquire() as conn:
        await present_session_token(conn, token)  # a compromised code path, once
    # Later, the same pooled connection serves a request that holds no token.
    async with tenant_transaction(one_conn_pool, tid) as conn:
        presented = await conn.fetchval("SELECT current_setting('llm.run_token', true)")
        done = await conn.fetchval(_END_WITHOUT_THE_LEASE, run_id)
    await _raw_update_refused(
        one_conn_pool,
        tid,
        "UPDATE investigations SET status = 'failed', reason = 'ended by a request', "
        "finished_at = now() WHERE id = $1",
        run_id,
    )
    assert done is None
    row = await _row(owner_pool, "investigations", run_id)
    assert row["status"] == "running", (presented, done)
    assert presented in (None, ""), "the token leaked into a later transaction"


async def test_a_transaction_local_token_is_gone_for_the_next_request_on_the_connection(
    one_conn_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, run_id)
    async with _holding(one_conn_pool, tid, token) as conn:
        await conn.execute(
            "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
            "VALUES ($1, $2, 'note')",
            tid,
            run_id,
        )
    async with tenant_transaction(one_conn_pool, tid) as conn:
        presented = await conn.fetchval("SELECT current_setting('llm.run_token', true)")
        done = await conn.fetchval(_END_WITHOUT_THE_LEASE, run_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
                "VALUES ($1, $2, 'note')",
                tid,
                run_id,
            )
    await _raw_update_refused(
        one_conn_pool, tid, "UPDATE investigations SET status = 'failed' WHERE id = $1", run_id
    )
    assert presented in (None, "")
    assert done is None
    assert (await _row(owner_pool, "investigations", run_id))["status"] == "running"


async def test_a_task_started_in_a_run_cannot_change_it_once_it_ended(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, run_id)
    run_ended = asyncio.Event()
    outcome: list[object] = []

    async def lingering() -> None:
        await run_ended.wait()
        async with tenant_transaction(app_pool, tid) as conn:  # still carries the run's token
            outcome.append(
                await conn.fetchval(
                    "SELECT fn_finish_investigation($1, 'w', 'failed', 'forged', 0, "
                    "'{\"forged\": true}', false)",
                    run_id,
                )
            )
        try:
            await _raw_update_refused(
                app_pool,
                tid,
                "UPDATE investigations SET result = '{\"forged\": true}', status = 'failed'"
                " WHERE id = $1",
                run_id,
            )
            outcome.append("refused")
        except BaseException as exc:  # the task's failure, reported by the assertion below
            outcome.append(exc)

    with presenting_run_token(token):
        task = asyncio.create_task(lingering())
        async with tenant_transaction(app_pool, tid) as conn:
            await _end(conn, run_id, token)
    run_ended.set()
    await task
    assert outcome == [None, "refused"]
    row = await _row(owner_pool, "investigations", run_id)
    assert row["status"] == "succeeded" and row["result"] == {}


async def test_a_finished_run_takes_no_more_events_or_tool_calls(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, run_id)
    event = (
        "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
        "VALUES ($1, $2, $3)"
    )
    async with _holding(app_pool, tid, token) as conn:  # the honest end
        await _end(conn, run_id, token)
        await conn.execute(event, tid, run_id, "final")
    added: list[str] = []
    for kind in ("final", "step", "tool call"):
        try:
            async with _holding(app_pool, tid, token) as conn:
                if kind == "tool call":
                    await conn.execute(
                        "INSERT INTO investigation_tool_calls (tenant_id, investigation_id, "
                        "tool_name) VALUES ($1, $2, 'sql')",
                        tid,
                        run_id,
                    )
                else:
                    await conn.execute(event, tid, run_id, kind)
            added.append(kind)
        except asyncpg.InsufficientPrivilegeError:
            pass
    finals = await _count(
        owner_pool,
        "SELECT count(*) FROM investigation_events WHERE investigation_id = $1 "
        "AND event_type = 'final'",
        run_id,
    )
    assert (added, finals) == ([], 1)


# --- the update guard: equality tricks, no-ops, UPDATE ... FROM, ON CONFLICT --------------------


async def test_a_tokenless_no_op_update_leaves_a_running_run_unchanged(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    await lease_run(owner_pool, tid, run_id)
    before = await _row(owner_pool, "investigations", run_id)
    await set_session_tenant(app_conn, tid)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            "UPDATE investigations SET status = status, lease_owner = lease_owner WHERE id = $1",
            run_id,
        )
    after = await _row(owner_pool, "investigations", run_id)
    assert after == before


async def test_jsonb_numbers_equal_in_value_are_still_a_change(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    await lease_run(owner_pool, tid, run_id)
    async with owner_pool.acquire() as conn:  # a running run holding a jsonb value
        await conn.execute(
            "UPDATE investigations SET result = '{\"share\": 1.0}'::jsonb WHERE id = $1", run_id
        )
    await set_session_tenant(app_conn, tid)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            "UPDATE investigations SET result = '{\"share\": 1.00000}'::jsonb WHERE id = $1",
            run_id,
        )
    async with owner_pool.acquire() as conn:
        text = await conn.fetchval("SELECT result::text FROM investigations WHERE id = $1", run_id)
    assert text == '{"share": 1.0}'


async def test_timestamps_equal_only_as_instants_change_nothing_and_a_microsecond_is_refused(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    await lease_run(owner_pool, tid, run_id)
    before = await _row(owner_pool, "investigations", run_id)
    await set_session_tenant(app_conn, tid)
    await app_conn.execute("SET timezone = 'Asia/Kathmandu'")  # +05:45: another text form
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            "UPDATE investigations SET lease_expires_at = lease_expires_at "
            "+ interval '1 microsecond' WHERE id = $1",
            run_id,
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            "UPDATE investigations SET lease_expires_at = lease_expires_at + interval '10 years' "
            "- interval '3652 days' - interval '2 days' + interval '2 days' WHERE id = $1",
            run_id,
        )
    await app_conn.execute("SET extra_float_digits = -15")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            "UPDATE investigations SET elapsed_ms = 1, degraded = true WHERE id = $1", run_id
        )
    after = await _row(owner_pool, "investigations", run_id)
    assert after["lease_expires_at"] == before["lease_expires_at"]
    assert after["elapsed_ms"] is None and after["degraded"] is False
    assert after["status"] == "running"


async def test_update_from_and_on_conflict_cannot_end_a_run_without_its_token(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    await lease_run(owner_pool, tid, run_id)
    queued_id = await _queue_investigation(app_pool, tid)
    async with owner_pool.acquire() as conn:
        await conn.execute(
            "UPDATE investigations SET idempotency_key = 'k-' || id WHERE id = ANY($1::uuid[])",
            [run_id, queued_id],
        )
    await set_session_tenant(app_conn, tid)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            "UPDATE investigations i SET status = 'failed', lease_expires_at = v.t "
            "FROM (SELECT now() - interval '1 hour' AS t) v WHERE i.id = ANY($1::uuid[])",
            [run_id, queued_id],
        )
    for target in (run_id, queued_id):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.fetchval(
                "INSERT INTO investigations (tenant_id, question, idempotency_key) "
                "VALUES ($1, 'again', 'k-' || $2::text) "
                "ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL "
                "DO UPDATE SET status = 'running', lease_owner = 'thief', "
                "lease_expires_at = now() + interval '1 hour' RETURNING status",
                tid,
                str(target),
            )
    assert (await _row(owner_pool, "investigations", run_id))["lease_owner"] == "w"
    queued = await _row(owner_pool, "investigations", queued_id)
    assert queued["status"] == "queued" and queued["lease_owner"] is None


# --- the insert guard: two runs on one row, COPY, isolation levels, the optimisation kind -------


async def test_a_ledger_row_cannot_name_a_second_run_it_holds_no_token_for(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    mine = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, mine)
    victim = await _queue_job(app_pool, tid)
    async with owner_pool.acquire() as conn:
        await conn.execute(
            "UPDATE budget_optimization_jobs SET status = 'succeeded', finished_at = now() "
            "WHERE id = $1",
            victim,
        )
    await set_session_tenant(app_conn, tid)
    refused = False
    try:
        async with app_conn.transaction():
            await app_conn.execute("SELECT set_config('llm.run_token', $1, true)", str(token))
            await _insert_call(app_conn, tid, investigation_id=mine, job_id=victim)
    except asyncpg.PostgresError:
        refused = True
    job = await _row(owner_pool, "budget_optimization_jobs", victim)
    linked = await _count(
        owner_pool,
        "SELECT count(*) FROM llm_api_calls WHERE budget_optimization_job_id = $1",
        victim,
    )
    assert (refused, linked, job["cost_cents"]) == (True, 0, Decimal(0))


async def test_copy_cannot_add_a_runs_events_or_calls(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    await lease_run(owner_pool, tid, run_id)
    await set_session_tenant(app_conn, tid)
    with pytest.raises(asyncpg.PostgresError):
        await app_conn.copy_records_to_table(
            "investigation_events",
            records=[(tid, run_id, "final")],
            columns=["tenant_id", "investigation_id", "event_type"],
        )
    with pytest.raises(asyncpg.PostgresError):
        await app_conn.copy_records_to_table(
            "investigation_tool_calls",
            records=[(tid, run_id, "sql")],
            columns=["tenant_id", "investigation_id", "tool_name"],
        )
    assert (
        await _count(
            owner_pool,
            "SELECT (SELECT count(*) FROM investigation_events WHERE investigation_id = $1)"
            " + (SELECT count(*) FROM investigation_tool_calls WHERE investigation_id = $1)",
            run_id,
        )
        == 0
    )


@pytest.mark.parametrize("level", ["serializable", "repeatable read", "read uncommitted"])
async def test_a_runs_rows_are_refused_outside_read_committed_even_with_its_token(
    level: str,
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, run_id)
    await set_session_tenant(app_conn, tid)
    statements = [
        (
            "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
            "VALUES ($1, $2, 'note')"
        ),
        (
            "INSERT INTO investigation_tool_calls (tenant_id, investigation_id, tool_name) "
            "VALUES ($1, $2, 'sql')"
        ),
    ]
    for statement in statements:
        with pytest.raises(asyncpg.InvalidTransactionStateError):
            async with app_conn.transaction(isolation=level.replace(" ", "_")):
                await app_conn.execute("SELECT set_config('llm.run_token', $1, true)", str(token))
                await app_conn.execute(statement, tid, run_id)
    with pytest.raises(asyncpg.InvalidTransactionStateError):
        async with app_conn.transaction(isolation=level.replace(" ", "_")):
            await app_conn.execute("SELECT set_config('llm.run_token', $1, true)", str(token))
            await _insert_call(app_conn, tid, investigation_id=run_id)
    assert (
        await _count(
            owner_pool, "SELECT count(*) FROM llm_api_calls WHERE investigation_id = $1", run_id
        )
        == 0
    )


async def test_an_optimisation_jobs_ledger_rows_need_its_current_token_and_running(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    queued = await _queue_job(app_pool, tid)
    job = await _queue_job(app_pool, tid)
    old = await lease_run(owner_pool, tid, job, table="budget_optimization_jobs")
    new = await lease_run(owner_pool, tid, job, table="budget_optimization_jobs", worker="w2")
    await set_session_tenant(app_conn, tid)
    for token, target in ((None, job), (old, job), (new, queued)):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with app_conn.transaction():
                if token is not None:
                    await app_conn.execute(
                        "SELECT set_config('llm.run_token', $1, true)", str(token)
                    )
                await _insert_call(app_conn, tid, job_id=target, endpoint="budget_optimizations")
    # Token-less: the job's columns stay as they are; the honest holder still writes.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            "UPDATE budget_optimization_jobs SET status = 'failed', recommendations = '{}', "
            "lease_owner = 'thief' WHERE id = ANY($1::uuid[])",
            [job, queued],
        )
    for target in (job, queued):
        ended = await app_conn.fetchval(
            "SELECT fn_finish_optimization($1, 'w2', 'failed', 'x', '{}', NULL, false)", target
        )
        assert ended is False
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('llm.run_token', $1, true)", str(new))
        await _insert_call(app_conn, tid, job_id=job, endpoint="budget_optimizations")
    row = await _row(owner_pool, "budget_optimization_jobs", job)
    assert row["lease_owner"] == "w2" and row["cost_cents"] == Decimal(1)
    assert (await _row(owner_pool, "budget_optimization_jobs", queued))["status"] == "queued"


async def _wait_until_blocked_or_done(
    owner_pool: asyncpg.Pool, task: asyncio.Task[Any], app_name: str
) -> bool:
    """Whether `task` (a statement of the pool named `app_name`) waits on a lock."""
    while not task.done():
        async with owner_pool.acquire() as conn:
            waiting = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 "
                "AND wait_event_type = 'Lock')",
                app_name,
            )
        if waiting:
            return True
        await asyncio.sleep(0)
    return False


async def test_a_write_in_flight_across_a_takeover_does_not_commit(
    database_urls: DatabaseUrls,
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    old = await lease_run(owner_pool, tid, run_id)
    takeover_pool = await create_pool(
        database_urls.owner, application_name="rt14d-takeover", min_size=1, max_size=1
    )
    try:
        await set_session_tenant(app_conn, tid)
        committed = True
        tx = app_conn.transaction()
        await tx.start()
        await app_conn.execute("SELECT set_config('llm.run_token', $1, true)", str(old))
        await app_conn.execute(
            "INSERT INTO investigation_events (tenant_id, investigation_id, event_type, data) "
            "VALUES ($1, $2, 'note', '{\"by\": \"old lease\"}')",
            tid,
            run_id,
        )
        takeover = asyncio.create_task(lease_run(takeover_pool, tid, run_id, worker="w2"))
        blocked = await _wait_until_blocked_or_done(owner_pool, takeover, "rt14d-takeover")
        try:
            await tx.commit()
        except asyncpg.PostgresError:
            committed = False
        new = await takeover
        assert new != old
    finally:
        await takeover_pool.close()
    notes = await _count(
        owner_pool,
        "SELECT count(*) FROM investigation_events WHERE investigation_id = $1 "
        "AND data ->> 'by' = 'old lease'",
        run_id,
    )
    # Either the takeover waited for the write (the write then came first) or the write failed.
    assert blocked or not committed or notes == 0, (blocked, committed, notes)


# --- keys, privileges, run rows -----------------------------------------------------------------


async def test_a_key_cannot_name_another_tenants_run_or_a_run_of_the_other_kind(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    tid, oid = tenant.tenant_id, other_tenant.tenant_id
    theirs = await _queue_investigation(app_pool, oid)
    their_job = await _queue_job(app_pool, oid)
    mine = await _queue_investigation(app_pool, tid)
    my_job = await _queue_job(app_pool, tid)
    await set_session_tenant(app_conn, tid)
    attempts = [
        (tid, "investigation", theirs),
        (tid, "budget_optimization", their_job),
        (tid, "investigation", my_job),
        (tid, "budget_optimization", mine),
        (tid, "explanation", mine),
        (oid, "investigation", theirs),
    ]
    for n, (key_tenant, kind, run_id) in enumerate(attempts):
        with pytest.raises(asyncpg.PostgresError):
            await app_conn.execute(
                "INSERT INTO job_idempotency_keys (tenant_id, idempotency_key, kind, run_id) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                key_tenant,
                f"rt14d-{n}",
                kind,
                run_id,
            )
    assert (
        await _count(
            owner_pool,
            "SELECT count(*) FROM job_idempotency_keys WHERE idempotency_key LIKE 'rt14d-%' "
            "AND tenant_id = ANY($1::uuid[])",
            [tid, oid],
        )
        == 0
    )


async def test_no_delete_truncate_or_replication_role_for_the_app(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    await lease_run(owner_pool, tid, run_id)
    await set_session_tenant(app_conn, tid)
    for table in (
        "investigations",
        "budget_optimization_jobs",
        "investigation_events",
        "investigation_tool_calls",
        "llm_api_calls",
        "job_idempotency_keys",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.execute(f"DELETE FROM {table}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.execute(f"TRUNCATE {table}")
    for scope in ("SET", "SET LOCAL"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with app_conn.transaction():
                await app_conn.execute(f"{scope} session_replication_role = replica")
    with pytest.raises(asyncpg.PostgresError):
        await app_conn.execute("ALTER TABLE investigations DISABLE TRIGGER USER")
    assert await app_conn.fetchval("SHOW session_replication_role") == "origin"
    assert (await _row(owner_pool, "investigations", run_id))["status"] == "running"


@pytest.mark.parametrize(
    "columns",
    [
        "status",
        "lease_token_hash",
        "lease_owner",
        "lease_expires_at",
        "started_at",
        "cancel_requested",
        "cost_cents",
    ],
)
async def test_the_app_cannot_insert_a_run_already_running_or_leased(
    columns: str, app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    values = {
        "status": "'running'",
        "lease_token_hash": "sha256('x'::bytea)",
        "lease_owner": "'thief'",
        "lease_expires_at": "now() + interval '1 hour'",
        "started_at": "now()",
        "cancel_requested": "false",
        "cost_cents": "0",
    }
    await set_session_tenant(app_conn, tid)
    for table, extra, extra_value in (
        ("investigations", "question", "'q'"),
        ("budget_optimization_jobs", "params", "'{}'::jsonb"),
    ):
        if table == "budget_optimization_jobs" and columns == "cancel_requested":
            continue
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.execute(
                f"INSERT INTO {table} (tenant_id, {extra}, {columns}) "
                f"VALUES ($1, {extra_value}, {values[columns]})",
                tid,
            )
    assert (
        await _count(owner_pool, "SELECT count(*) FROM investigations WHERE tenant_id = $1", tid)
        == 0
    )


# --- ledger settles, the API's own events, answers ----------------------------------------------


async def test_a_tokenless_session_cannot_settle_a_running_runs_call(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, run_id)
    async with _holding(app_pool, tid, token) as conn:  # the worker reserves
        await _insert_call(conn, tid, investigation_id=run_id, reserved=Decimal(5))
    assert (await _row(owner_pool, "investigations", run_id))["cost_cents"] == Decimal(5)
    await set_session_tenant(app_conn, tid)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            "UPDATE llm_api_calls SET status = 'succeeded', cost_cents = 0, settled_at = now() "
            "WHERE investigation_id = $1",
            run_id,
        )
    settled = await app_conn.fetchval(
        "SELECT bool_or(fn_settle_call(id, 'succeeded', 0, 0, 0, false, 1, NULL, NULL, NULL, "
        "NULL, NULL, NULL)) FROM llm_api_calls WHERE investigation_id = $1",
        run_id,
    )
    assert settled is False
    pending = await _count(
        owner_pool,
        "SELECT count(*) FROM llm_api_calls WHERE investigation_id = $1 AND status = 'pending'",
        run_id,
    )
    cost = (await _row(owner_pool, "investigations", run_id))["cost_cents"]
    assert (pending, cost) == (1, Decimal(5))


async def test_a_never_claimed_run_takes_only_the_apis_own_events(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    queued = await _queue_investigation(app_pool, tid)
    cancelled = await _queue_investigation(app_pool, tid)
    event = (
        "INSERT INTO investigation_events (tenant_id, investigation_id, event_type, data) "
        "VALUES ($1, $2, $3, $4::jsonb)"
    )
    async with tenant_transaction(app_pool, tid) as conn:  # the API's own cancel
        assert await investigation_repository.request_cancel(conn, cancelled) is not None
        await conn.execute(event, tid, cancelled, "final", {"status": "cancelled"})
    await set_session_tenant(app_conn, tid)
    forged = 0
    for run_id, kind in ((queued, "queued"), (cancelled, "final")):
        try:
            await app_conn.execute(
                event, tid, run_id, kind, '{"status": "succeeded", "findings": 9}'
            )
            forged += 1
        except asyncpg.PostgresError:
            pass
    assert forged == 0
    assert (
        await _count(
            owner_pool,
            "SELECT count(*) FROM investigation_events WHERE investigation_id = $1",
            cancelled,
        )
        == 1
    )


async def test_the_token_and_its_hash_never_appear_in_the_apis_answers(
    client: Any, app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, run_id)
    async with _holding(app_pool, tid, token) as conn:
        await conn.execute(
            "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
            "VALUES ($1, $2, 'started')",
            tid,
            run_id,
        )
    digest = (await _row(owner_pool, "investigations", run_id))["lease_token_hash"].hex()
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    bodies = []
    for path in (f"/v1/investigations/{run_id}", "/v1/investigations"):
        answer = await client.get(path, headers=headers)
        assert answer.status_code == 200
        bodies.append(answer.text)
    answer = await client.post(f"/v1/investigations/{run_id}/cancel", headers=headers)
    assert answer.status_code == 200
    bodies.append(answer.text)
    for body in bodies:
        assert str(run_id) in body
        for secret in (str(token), token.hex, digest):
            assert secret not in body.lower()


async def test_the_app_cannot_make_a_token_a_default_of_its_role_or_database(
    database_urls: DatabaseUrls,
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, run_id)
    database = await app_conn.fetchval("SELECT quote_ident(current_database())")
    targets = ("ROLE llm_app", f"ROLE llm_app IN DATABASE {database}", f"DATABASE {database}")
    refused: list[str] = []
    done = "not tried"
    try:
        for target in targets:
            try:
                await app_conn.execute(f"ALTER {target} SET llm.run_token = '{token}'")
            except asyncpg.PostgresError as exc:
                refused.append(type(exc).__name__)
        pool = await create_pool(database_urls.app, application_name="rt14d-new", max_size=1)
        try:
            async with tenant_transaction(pool, tid) as conn:  # a request, holding no token
                done = await conn.fetchval(_END_WITHOUT_THE_LEASE, run_id)
            await _raw_update_refused(
                pool,
                tid,
                "UPDATE investigations SET status = 'failed', finished_at = now() WHERE id = $1",
                run_id,
            )
        finally:
            await pool.close()
    finally:
        async with owner_pool.acquire() as conn:
            for target in targets:
                await conn.execute(f"ALTER {target} RESET llm.run_token")
    assert refused == ["InsufficientPrivilegeError"] * len(targets)
    assert done is None
    assert (await _row(owner_pool, "investigations", run_id))["status"] == "running"


async def test_a_claims_repr_does_not_show_its_token() -> None:
    token = uuid.uuid4()
    claim = Claim("investigation", uuid.uuid4(), uuid.uuid4(), False, token)
    assert str(token) not in repr(claim) and token.hex not in repr(claim)


async def test_another_app_session_cannot_read_a_presented_token(
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, run_id)
    async with _holding(app_pool, tid, token) as conn:  # the worker, open
        await conn.execute(
            "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
            "VALUES ($1, $2, 'note')",
            tid,
            run_id,
        )
        seen = await app_conn.fetch(
            "SELECT coalesce(query, '') AS q FROM pg_stat_activity WHERE usename = current_user"
        )
        assert len(seen) >= 2  # the worker's session is visible to the same role
        assert all(str(token) not in r["q"] and token.hex not in r["q"] for r in seen)
        assert await app_conn.fetchval("SELECT current_setting('llm.run_token', true)") in (
            None,
            "",
        )


async def test_hand_back_needs_the_token_and_still_works_with_it(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    from llm_service.investigations.repository import TABLE
    from llm_service.jobs.repository import hand_back

    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    token = await lease_run(owner_pool, tid, run_id)
    async with tenant_transaction(app_pool, tid) as conn:
        assert not await hand_back(conn, TABLE, run_id, "w", uuid.uuid4())
    before = await _row(owner_pool, "investigations", run_id)
    async with tenant_transaction(app_pool, tid) as conn:
        assert await hand_back(conn, TABLE, run_id, "w", token)
    after = await _row(owner_pool, "investigations", run_id)
    assert after["status"] == "running"
    assert after["lease_expires_at"] < before["lease_expires_at"]


async def test_an_update_in_flight_holds_off_a_takeover_and_is_refused_after_it(
    database_urls: DatabaseUrls,
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    run_id = await _queue_investigation(app_pool, tid)
    old = await lease_run(owner_pool, tid, run_id)
    takeover_pool = await create_pool(
        database_urls.owner, application_name="rt14d-takeover-u", min_size=1, max_size=1
    )
    try:
        await set_session_tenant(app_conn, tid)
        async with app_conn.transaction():
            await app_conn.execute("SELECT set_config('llm.run_token', $1, true)", str(old))
            # The holder's write in flight (since 012 its only updates are its end and hand-back).
            await app_conn.execute(
                "INSERT INTO investigation_events (tenant_id, investigation_id, event_type) "
                "VALUES ($1, $2, 'note')",
                tid,
                run_id,
            )
            takeover = asyncio.create_task(lease_run(takeover_pool, tid, run_id, worker="w2"))
            assert await _wait_until_blocked_or_done(owner_pool, takeover, "rt14d-takeover-u")
        assert await takeover != old
    finally:
        await takeover_pool.close()
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('llm.run_token', $1, true)", str(old))
        done = await app_conn.fetchval(
            "SELECT fn_finish_investigation($1, 'w', 'succeeded', 'x', 0, NULL, false)", run_id
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with app_conn.transaction():
            await app_conn.execute("SELECT set_config('llm.run_token', $1, true)", str(old))
            await app_conn.execute(
                "UPDATE investigations SET status = 'succeeded', finished_at = now() WHERE id = $1",
                run_id,
            )
    assert done is None
    row = await _row(owner_pool, "investigations", run_id)
    assert row["status"] == "running" and row["lease_owner"] == "w2"
