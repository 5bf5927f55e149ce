"""The job kit attacked: racing claims, late heartbeats, stolen leases, reused keys, unknown kinds,
and heartbeats that must not wait behind a saturated pool."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.investigations import repository as investigation_repository
from llm_service.jobs import repository
from llm_service.jobs.kinds import Claim, JobTable, Registry
from llm_service.jobs.runtime import JobRuntime
from llm_service.tenants.service import CreatedTenant
from llm_service.workers.worker import Worker, claim_batch

PERIOD = {"start": "2025-01-01", "end": "2025-02-01"}


def _auth(tenant: CreatedTenant, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}", **extra}


async def _queue_investigations(pool: asyncpg.Pool, tenant_id: UUID, n: int) -> list[UUID]:
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await conn.fetch(
            "INSERT INTO investigations (tenant_id, question) "
            "SELECT $1, 'Why? ' || g FROM generate_series(1, $2) AS g RETURNING id",
            tenant_id,
            n,
        )
    return [r["id"] for r in rows]


async def _queue_budget_job(pool: asyncpg.Pool, tenant_id: UUID) -> UUID:
    async with tenant_transaction(pool, tenant_id) as conn:
        job_id: UUID = await conn.fetchval(
            "INSERT INTO budget_optimization_jobs (tenant_id, params) VALUES ($1, $2) RETURNING id",
            tenant_id,
            {"total_budget_usd": "1", "period": PERIOD, "model_type": "linear"},
        )
    return job_id


async def _lease(owner_pool: asyncpg.Pool, table: str, run_id: UUID) -> asyncpg.Record:
    row: asyncpg.Record = await owner_pool.fetchrow(
        f"SELECT status, lease_owner, lease_expires_at FROM {table} WHERE id = $1", run_id
    )
    return row


@pytest.fixture(autouse=True)
async def _no_leftovers(owner_pool: asyncpg.Pool, tenant: CreatedTenant) -> AsyncIterator[None]:
    """Runs made here are never executed: end them so no other test's worker picks them up."""
    yield
    for table in ("investigations", "budget_optimization_jobs"):
        async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
            await conn.execute(
                f"UPDATE {table} SET status = 'cancelled', reason = 'test cleanup', "
                "finished_at = now(), lease_owner = NULL, lease_expires_at = NULL "
                "WHERE status IN ('queued', 'running')"
            )


async def test_two_workers_claiming_at_once_get_distinct_runs(
    database_urls: DatabaseUrls, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    mine = set(await _queue_investigations(app_pool, tenant.tenant_id, 60))
    pool = await create_pool(database_urls.app, application_name="tests-race", max_size=2)
    try:
        a, b = await asyncio.gather(
            claim_batch(pool, "race-a", lease_s=60, limit=500),
            claim_batch(pool, "race-b", lease_s=60, limit=500),
        )
    finally:
        await pool.close()
    ids_a, ids_b = {c.run_id for c in a}, {c.run_id for c in b}
    assert len(ids_a) == len(a) and len(ids_b) == len(b)  # none twice within one batch
    assert not ids_a & ids_b  # none claimed by both
    assert mine <= ids_a | ids_b


async def test_a_late_heartbeat_loses_the_run_to_exactly_one_other_worker(
    database_urls: DatabaseUrls,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    [run_id] = await _queue_investigations(app_pool, tenant.tenant_id, 1)
    claimed = await claim_batch(app_pool, "late-a", lease_s=60, limit=500)
    [a_claim] = [c for c in claimed if c.run_id == run_id]
    # Worker A's heartbeat is late: its lease ran out (as if a minute had passed).
    await owner_pool.execute(
        "UPDATE investigations SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        run_id,
    )
    pool = await create_pool(database_urls.app, application_name="tests-takeover", max_size=2)
    try:
        b, c = await asyncio.gather(
            claim_batch(pool, "late-b", lease_s=60, limit=500),
            claim_batch(pool, "late-c", lease_s=60, limit=500),
        )
    finally:
        await pool.close()
    takers = [claim for claim in (*b, *c) if claim.run_id == run_id]
    assert len(takers) == 1 and takers[0].takeover
    new_owner = (await _lease(owner_pool, "investigations", run_id))["lease_owner"]
    assert new_owner in ("late-b", "late-c")

    assert takers[0].lease_token != a_claim.lease_token  # a takeover draws a fresh token

    # A's late heartbeat reports the run lost and does not extend the new holder's lease, with
    # its own name or the new holder's; nor do its hand-back or the old token under A's name.
    before = await _lease(owner_pool, "investigations", run_id)
    async with app_pool.acquire() as conn:
        held_by_a = await repository.renew_leases(conn, "late-a", 3600, [a_claim.lease_token])
        as_new = await repository.renew_leases(conn, new_owner, 3600, [a_claim.lease_token])
        stolen = await repository.renew_leases(conn, "late-a", 3600, [takers[0].lease_token])
        after_a = await _lease(owner_pool, "investigations", run_id)
        held_by_new = await repository.renew_leases(conn, new_owner, 60, [takers[0].lease_token])
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        table = JobTable("investigation", "investigations", "investigation_id")
        assert not await repository.hand_back(conn, table, run_id, "late-a", a_claim.lease_token)
        assert not await repository.hand_back(conn, table, run_id, new_owner, a_claim.lease_token)
    assert held_by_a == {} and as_new == {} and stolen == {}
    assert after_a == before  # A's hour-long renewals changed nothing
    assert held_by_new == {run_id: False}
    after = await _lease(owner_pool, "investigations", run_id)
    assert after["lease_owner"] == new_owner
    assert after["lease_expires_at"] >= before["lease_expires_at"]


async def test_the_batched_renewal_refuses_what_the_claim_refuses(app_pool: asyncpg.Pool) -> None:
    async with app_pool.acquire() as conn:
        for worker, lease_s, runs in (
            ("w", 1e9, []),  # a lease of 31 years
            ("w", 0, []),
            ("", 10, []),
            ("w", 10, [uuid.uuid4() for _ in range(10_001)]),
        ):
            with pytest.raises(asyncpg.InvalidParameterValueError):
                await repository.renew_leases(conn, worker, lease_s, runs)


async def test_a_renewal_writes_only_the_lease_of_running_rows_the_caller_holds(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    queued, finished = await _queue_investigations(app_pool, tenant.tenant_id, 2)
    token = uuid.uuid4()
    await owner_pool.execute(
        "UPDATE investigations SET status = 'succeeded', lease_owner = 'w-x', "
        "lease_token_hash = sha256(uuid_send($2::uuid)), finished_at = now() WHERE id = $1",
        finished,
        token,
    )
    async with app_pool.acquire() as conn:
        assert await repository.renew_leases(conn, "w-x", 60, [queued, finished, token]) == {}
    for run in (queued, finished):
        assert (await _lease(owner_pool, "investigations", run))["lease_expires_at"] is None


@pytest.mark.parametrize("kind", ["investigation", "budget_optimization"])
async def test_same_key_and_a_different_body_is_409_for_every_kind(
    client: httpx.AsyncClient, tenant: CreatedTenant, kind: str
) -> None:
    url, first, second = {
        "investigation": (
            "/v1/investigations",
            {"question": "Why did paid social drop?"},
            {"question": "Why did email grow?"},
        ),
        "budget_optimization": (
            "/v1/budget-optimizations",
            {"total_budget_usd": "10000.00", "period": PERIOD},
            {"total_budget_usd": "9999.99", "period": PERIOD},
        ),
    }[kind]
    headers = _auth(tenant, **{"Idempotency-Key": f"kit-{uuid.uuid4()}"})
    created = await client.post(url, json=first, headers=headers)
    assert created.status_code == 202, created.text
    assert created.headers["Location"] == f"{url}/{created.json()['id']}"
    again = await client.post(url, json=first, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == created.json()["id"]
    reused = await client.post(url, json=second, headers=headers)
    assert reused.status_code == 409
    error = reused.json()["error"]
    assert error["code"] == "conflict" and "Idempotency-Key" in error["message"]


async def test_a_worker_claims_only_the_kinds_it_registered(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    job_id = await _queue_budget_job(app_pool, tenant.tenant_id)
    [run_id] = await _queue_investigations(app_pool, tenant.tenant_id, 1)
    nothing = await claim_batch(app_pool, "kinds-x", lease_s=60, limit=500, kinds=["no_such"])
    assert nothing == []
    only_runs = await claim_batch(
        app_pool, "kinds-y", lease_s=60, limit=500, kinds=["investigation"]
    )
    assert run_id in {c.run_id for c in only_runs}
    assert {c.kind for c in only_runs} == {"investigation"}
    jobs = await claim_batch(
        app_pool, "kinds-z", lease_s=60, limit=500, kinds=["budget_optimization"]
    )
    assert job_id in {c.run_id for c in jobs}


class _Recorder:
    """A third job kind (on the investigations table, for the test): records what it ran."""

    name = "recorder"
    table = JobTable("recorder", "investigations", "investigation_id")

    def __init__(self) -> None:
        self.ran: list[UUID] = []

    async def execute(self, claim: Claim) -> str:
        self.ran.append(claim.run_id)
        return "succeeded"


async def test_a_claim_of_an_unknown_kind_crashes_nothing(app_pool: asyncpg.Pool) -> None:
    recorder = _Recorder()
    worker = Worker(app_pool, None, name="kinds-w", kinds=[recorder])
    assert worker.kinds.names == ["recorder"]
    stray = Claim("no_such_kind", uuid.uuid4(), uuid.uuid4(), False, uuid.uuid4())
    assert await worker.process(stray) == "unknown kind"
    known = Claim("recorder", uuid.uuid4(), uuid.uuid4(), False, uuid.uuid4())
    assert await worker.process(known) == "succeeded"
    assert recorder.ran == [known.run_id]
    # Nothing of a kind the database does not know is ever claimed for this worker.
    assert await worker.run_once() is None
    with pytest.raises(ValueError, match="twice"):
        Registry([recorder, recorder])


async def test_heartbeats_keep_leases_while_the_pool_is_saturated(
    database_urls: DatabaseUrls,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    runs = await _queue_investigations(app_pool, tenant.tenant_id, 30)
    claimed = await claim_batch(app_pool, "sat-w", lease_s=1, limit=500)
    assert set(runs) <= {c.run_id for c in claimed}
    pool = await create_pool(database_urls.app, application_name="tests-sat", max_size=1)
    runtime = JobRuntime(pool, "sat-w", lease_s=1, heartbeat_url=database_urls.app)
    runtime.renewal.tokens.update({c.run_id: c.lease_token for c in claimed})
    rounds: list[int] = []
    three_rounds = asyncio.Event()
    renew = runtime.leases.renew

    async def counted(run_ids: Sequence[UUID]) -> Mapping[UUID, bool]:
        held = await renew(run_ids)
        rounds.append(len(held))
        if len(rounds) >= 3:
            three_rounds.set()
        return held

    runtime.leases.renew = counted
    try:
        async with pool.acquire():  # every pool connection is busy for the whole test
            leases = [runtime.leases.hold(run) for run in runs]
            await three_rounds.wait()
            # Three renewals of all 30 leases went through while the pool had nothing free,
            # each ONE statement, and none was lost.
            assert rounds[:3] == [30, 30, 30]
            assert not any(lease.ended.done() for lease in leases)
            expires = await owner_pool.fetch(
                "SELECT lease_expires_at > now() AS live FROM investigations "
                "WHERE id = ANY($1::uuid[])",
                runs,
            )
            assert all(r["live"] for r in expires)
    finally:
        await runtime.aclose()
        await pool.close()


async def test_a_cancel_request_reaches_the_run_through_the_batched_renewal(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    [run_id] = await _queue_investigations(app_pool, tenant.tenant_id, 1)
    claimed = await claim_batch(app_pool, "cancel-w", lease_s=1, limit=500)
    [claim] = [c for c in claimed if c.run_id == run_id]
    runtime = JobRuntime(app_pool, "cancel-w", lease_s=1)
    started = asyncio.Event()

    async def work() -> Any:
        started.set()
        await asyncio.Event().wait()  # runs until cancelled

    try:
        supervising = asyncio.create_task(runtime.supervise(claim, work(), 30))
        await started.wait()
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            assert await investigation_repository.request_cancel(conn, run_id) is not None
        supervised = await supervising
        assert supervised.ended == "cancel"
    finally:
        await runtime.aclose()
