"""The compromised session of the red-team tests: a raw llm_app connection and ledger rows.

A raw connection (not a pool's tenant transaction) is what an attacker holding the application
role's credentials has: it sets its tenant for the whole session and writes through the column
grants the role really has.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg

from tests.helpers.waiting import wait_until

# Runs and jobs the red-team tests made: ended at each test's teardown (tests/redteam/conftest),
# so later tests' claims do not take them.
_REMEMBERED: list[tuple[str, uuid.UUID]] = []


async def set_session_tenant(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
    """Set the tenant for the rest of the session (not one transaction), as an attacker may."""
    await conn.execute("SELECT set_config('app.current_tenant_id', $1, false)", str(tenant_id))


async def insert_pending(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    reserved: Decimal,
    *,
    expires: str = "now() + interval '5 minutes'",
    investigation_id: uuid.UUID | None = None,
    settle_token: uuid.UUID | None = None,
) -> uuid.UUID:
    """As the app (tenant already set): insert a pending reservation through its column grants.
    With `settle_token` the row keeps its sha256, as the gateway's reserve does (migration 012:
    its settle must present it); without, the row has no hash, as one reserved before 012."""
    call_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, "
        "reserved_cents, reservation_expires_at, max_tokens, investigation_id, settle_token_hash) "
        f"VALUES ($1, $2, $3, 'explanations', 'gpt-4o-mini', 'openai', $4, {expires}, 100, $5, "
        "sha256(uuid_send($6::uuid)))",
        call_id,
        tenant_id,
        str(call_id),
        reserved,
        investigation_id,
        settle_token,
    )
    return call_id


async def lease_run(
    owner_pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    run_id: uuid.UUID,
    *,
    table: str = "investigations",
    worker: str = "w",
) -> uuid.UUID:
    """Lease the run as fn_claim_next_run would: a fresh token, the row keeping its sha256.
    Returns the token (a run's writes need it, migration 010)."""
    assert table in ("investigations", "budget_optimization_jobs")
    token = uuid.uuid4()
    async with owner_pool.acquire() as conn:
        done = await conn.execute(
            f"UPDATE {table} SET status = 'running', lease_owner = $2, "
            "lease_expires_at = now() + interval '1 minute', "
            "lease_token_hash = sha256(uuid_send($3::uuid)) "
            # Locked first, as the claim locks it (FOR UPDATE): a write in flight holds it off.
            f"WHERE id = (SELECT id FROM {table} WHERE id = $1 FOR UPDATE)",
            run_id,
            worker,
            token,
        )
    assert done == "UPDATE 1"
    return token


async def present_session_token(conn: asyncpg.Connection, token: uuid.UUID) -> None:
    """Present a run's lease token for the rest of the session, as its holder may."""
    await conn.execute("SELECT set_config('llm.run_token', $1, false)", str(token))


def remember_run(table: str, run_id: uuid.UUID) -> None:
    """Have the test's teardown end this run (or job) if it is still queued or running."""
    _REMEMBERED.append((table, run_id))


async def end_remembered_runs(owner_pool: asyncpg.Pool) -> None:
    """End (as failed) every remembered run still queued or running, and forget them."""
    made = list(_REMEMBERED)
    _REMEMBERED.clear()
    for table, run_id in made:
        await owner_pool.execute(
            f"UPDATE {table} SET status = 'failed', reason = 'red-team test over', "
            "finished_at = now(), lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = $1 AND status IN ('queued', 'running')",
            run_id,
        )


def has_remembered_runs() -> bool:
    """Whether a test left runs to end."""
    return bool(_REMEMBERED)


async def queued_run(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> uuid.UUID:
    """As the API: a queued investigation of the session's tenant (set here), remembered."""
    await set_session_tenant(conn, tenant_id)
    run_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, max_steps) "
        "VALUES ($1, 'why did spend move?', 30, 60000, 8) RETURNING id",
        tenant_id,
    )
    remember_run("investigations", run_id)
    return run_id


async def queued_job(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> uuid.UUID:
    """As the API: a queued budget optimisation job of the session's tenant (set here)."""
    await set_session_tenant(conn, tenant_id)
    job_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO budget_optimization_jobs (tenant_id, params) VALUES ($1, '{}') RETURNING id",
        tenant_id,
    )
    remember_run("budget_optimization_jobs", job_id)
    return job_id


async def lock_held(owner_pool: asyncpg.Pool, pid: int) -> None:
    """Wait until session `pid` is idle in its transaction (its lock taken)."""

    async def idle() -> bool:
        state = await owner_pool.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
        return bool(state == "idle in transaction")

    await wait_until(idle, f"session {pid} idle in its transaction")


async def done_or_waiting(owner_pool: asyncpg.Pool, task: asyncio.Task[Any], pid: int) -> bool:
    """Wait until `task` is done or session `pid` waits for a lock; True if it was done."""

    async def settled() -> bool:
        if task.done():
            return True
        waits = await owner_pool.fetchval(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
        )
        return bool(waits == "Lock")

    await wait_until(settled, f"session {pid} done or waiting for a lock")
    return task.done()
