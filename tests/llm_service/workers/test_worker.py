"""The claim loop: a worker takes over its own runs it no longer executes, never one it does."""

from __future__ import annotations

import asyncio
from uuid import UUID

import asyncpg

from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.investigations import repository as investigations_repository
from llm_service.tenants.service import CreatedTenant
from llm_service.workers.worker import Claim, Worker, claim_batch
from tests.helpers.waiting import wait_until


async def _queue(pool: asyncpg.Pool, tenant_id: UUID) -> UUID:
    async with tenant_transaction(pool, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question) VALUES ($1, 'Why?') RETURNING id",
            tenant_id,
        )
    return run_id


async def _claim_until(
    pool: asyncpg.Pool, worker: str, lease_s: float, run_id: UUID
) -> list[Claim]:
    """Claim as `worker` until `run_id` is among the claims (older queued runs come first)."""
    claimed: list[Claim] = []
    for _ in range(100):
        claimed += await claim_batch(pool, worker, lease_s=lease_s, limit=25)
        if run_id in {claim.run_id for claim in claimed}:
            return claimed
    raise AssertionError("the run was never claimed")


async def _run(pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> asyncpg.Record:
    async with tenant_transaction(pool, tenant_id) as conn:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT status, reason, attempts, lease_owner FROM investigations WHERE id = $1", run_id
        )
    return row


async def test_a_claim_whose_answer_was_lost_is_taken_over_by_the_same_worker(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id = await _queue(app_pool, tenant.tenant_id)
    # The claim commits, but its answer never reaches the worker (the connection died).
    await _claim_until(app_pool, "worker-a", 0.3, run_id)
    worker = Worker(app_pool, None, name="worker-a", lease_s=0.3, poll_interval_s=0.05)
    loop = asyncio.create_task(worker.run_until_stopped())
    try:

        async def finished() -> bool:
            return bool((await _run(app_pool, tenant.tenant_id, run_id))["status"] != "running")

        await wait_until(finished, "the worker took the run over and finished it")
    finally:
        worker.stop()
        await loop
    run = await _run(app_pool, tenant.tenant_id, run_id)
    assert run["status"] == "failed"
    assert "interrupted" in run["reason"]
    assert run["attempts"] == 2
    assert run["lease_owner"] is None


async def test_a_worker_never_takes_over_a_run_it_is_executing(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id = await _queue(app_pool, tenant.tenant_id)
    claimed = await _claim_until(app_pool, "worker-b", 0.1, run_id)

    async def lease_expired() -> bool:  # on the database's clock: a late heartbeat, not a death
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            expired = await conn.fetchval(
                "SELECT lease_expires_at < clock_timestamp() FROM investigations WHERE id = $1",
                run_id,
            )
        return bool(expired)

    await wait_until(lease_expired, "the 0.1 s lease expired")
    executing = [claim.run_id for claim in claimed]
    again = await claim_batch(app_pool, "worker-b", lease_s=0.1, limit=500, running=executing)
    assert run_id not in {claim.run_id for claim in again}
    # Another worker does take it over.
    other = await claim_batch(app_pool, "worker-c", lease_s=5, limit=500)
    assert any(c.run_id == run_id and c.takeover for c in other)


class _SlowWorker(Worker):
    """A worker whose runs take far longer than its shutdown grace."""

    async def _process(self, claim: Claim) -> str:
        await asyncio.sleep(60)  # the slow run is the behaviour under test (cancelled at the grace)
        return "succeeded"


async def test_stop_at_full_concurrency_hands_back_runs_after_the_grace(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    await _queue(app_pool, tenant.tenant_id)
    worker = _SlowWorker(
        app_pool, None, name="worker-d", lease_s=30, poll_interval_s=0.05, shutdown_grace_s=0.5
    )
    worker.concurrency = 1
    loop = asyncio.create_task(worker.run_until_stopped())

    async def running_one() -> bool:
        return worker.in_flight == 1

    await wait_until(running_one, "the worker runs the queued run")
    [claim] = worker._running.values()
    worker.stop()
    # Every slot busy: the loop still notices the stop, waits the grace, cancels, hands back.
    await asyncio.wait_for(loop, timeout=5)
    assert worker.in_flight == 0
    handed_back = await owner_pool.fetchval(
        "SELECT lease_expires_at <= now() FROM investigations WHERE id = $1", claim.run_id
    )
    assert handed_back


class _HeldKind:
    """Investigations that only record their claim and hold it until the worker stops."""

    name = "investigation"
    table = investigations_repository.TABLE

    def __init__(self) -> None:
        self.claimed = asyncio.Event()

    async def execute(self, claim: Claim) -> str:
        self.claimed.set()
        await asyncio.Event().wait()  # until cancelled at the shutdown grace
        return "succeeded"


async def test_claims_do_not_wait_behind_the_runs_for_the_pool(
    database_urls: DatabaseUrls, tenant: CreatedTenant
) -> None:
    # Every connection of the runs' pool is busy (1,000 runs on 86 connections): the claim loop
    # still claims, on its own connection, so runs are in flight at once rather than queued.
    pool = await create_pool(database_urls.app, application_name="tests-claims", max_size=1)
    try:
        await _queue(pool, tenant.tenant_id)
        kind = _HeldKind()
        worker = Worker(
            pool,
            None,
            name="worker-own-claims",
            lease_s=30,
            poll_interval_s=0.05,
            shutdown_grace_s=0.1,
            heartbeat_url=database_urls.app,
            kinds=[kind],
        )
        async with pool.acquire():  # the pool's only connection, held by "the runs"
            loop = asyncio.create_task(worker.run_until_stopped())
            try:
                await asyncio.wait_for(kind.claimed.wait(), 60)
            finally:
                worker.stop()
        await asyncio.wait_for(loop, 30)  # hands the held runs back (the pool is free again)
    finally:
        await pool.close()
