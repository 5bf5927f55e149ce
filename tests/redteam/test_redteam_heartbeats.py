"""Red team, issue 15: batched heartbeats on their own connection (LeaseKeeper, fn_renew_leases).

Each test holds real leases of real runs (the application role's own renewal statement, on the
keeper's own connection, as the worker does) and attacks the batch: one run's row locked by
another transaction, a run deleted or cancelled mid-flight, the keeper's connection killed,
another worker taking a run over while the keeper still thinks it holds it, 1,000 runs at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from uuid import UUID

import asyncpg
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.jobs.leases import Lease, LeaseKeeper
from llm_service.jobs.runtime import DatabaseRenewal, JobRuntime
from llm_service.tenants.service import CreatedTenant
from llm_service.workers.worker import claim_batch
from tests.helpers.waiting import wait_until
from tests.llm_service.investigations import claimed_runs
from tests.llm_service.investigations.claimed_runs import claim_of, queue_claimed_run

# Long enough that a loaded 2-core machine renews on time; short enough to keep tests lean.
LEASE_S = 3.0


class Keeper:
    """A LeaseKeeper renewing through the worker's own statement on its own connection."""

    def __init__(
        self, pool: asyncpg.Pool, app_url: str, worker: str, lease_s: float = LEASE_S
    ) -> None:
        self.worker = worker
        self.renewal = DatabaseRenewal(pool, worker, lease_s, url=app_url)
        self.keeper = LeaseKeeper(self.renewal, lease_s=lease_s)

    def hold(self, run_id: UUID) -> Lease:
        """Hold the lease of a run queued by `_runs`, presenting its claim's token."""
        self.renewal.tokens[run_id] = claim_of(run_id).lease_token
        return self.keeper.hold(run_id)

    async def rounds_after(self, n: int) -> None:
        """Until the keeper has sent more than `n` successful renewals."""
        await wait_until(
            lambda: _truthy(self.keeper.rounds > n), f"{self.worker}: a renewal after round {n}"
        )

    async def aclose(self) -> None:
        await self.keeper.aclose()
        await self.renewal.aclose()


async def _truthy(value: bool) -> bool:
    return value


@pytest.fixture(autouse=True)
def _claims_as_owner(owner_pool: asyncpg.Pool) -> Iterator[None]:
    """queue_claimed_run takes leases as the owner (only the claim may set a token's hash)."""
    claimed_runs.owner = owner_pool
    yield
    claimed_runs.owner = None


@pytest.fixture
async def keeper(
    database_urls: DatabaseUrls,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> AsyncIterator[Keeper]:
    """A keeper of a fresh worker name; the tenant's runs are deleted afterwards (no later
    worker takes them over)."""
    k = Keeper(app_pool, database_urls.app, f"rt15-{uuid.uuid4().hex[:8]}")
    yield k
    await k.aclose()
    async with owner_pool.acquire() as conn:
        # A renewal cut off by its timeout may still wait on the server: end it first.
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'llm-service-heartbeat'"
        )
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute("DELETE FROM investigations WHERE tenant_id = $1", tenant.tenant_id)


async def _runs(pool: asyncpg.Pool, tenant: CreatedTenant, worker: str, n: int) -> list[UUID]:
    """`n` running investigations leased by `worker`, ordered by id."""
    ids = [
        await queue_claimed_run(pool, tenant.tenant_id, f"heartbeat run {i}", worker=worker)
        for i in range(n)
    ]
    return sorted(ids)


async def _heartbeat_at(pool: asyncpg.Pool, tenant: CreatedTenant, run_id: UUID) -> object:
    async with tenant_transaction(pool, tenant.tenant_id) as conn:
        return await conn.fetchval("SELECT heartbeat_at FROM investigations WHERE id = $1", run_id)


async def _lease_expired(pool: asyncpg.Pool, tenant: CreatedTenant, run_id: UUID) -> bool:
    async with tenant_transaction(pool, tenant.tenant_id) as conn:
        return bool(
            await conn.fetchval(
                "SELECT lease_expires_at < clock_timestamp() FROM investigations WHERE id = $1",
                run_id,
            )
        )


async def _ended(lease: Lease) -> str:
    return await lease.wait()


@pytest.fixture
async def locked_row(owner_pool: asyncpg.Pool) -> AsyncIterator[list[asyncpg.Connection]]:
    """Connections holding a row lock in an open transaction (rolled back at the end)."""
    held: list[asyncpg.Connection] = []
    yield held
    for conn in held:
        await conn.execute("ROLLBACK")
        await owner_pool.release(conn)


async def _lock_run(
    owner_pool: asyncpg.Pool, held: list[asyncpg.Connection], tenant: CreatedTenant, run_id: UUID
) -> None:
    """Another transaction (an operator's UPDATE, a long cancel) holds the run's row lock."""
    conn = await owner_pool.acquire()
    held.append(conn)
    await conn.execute("BEGIN")
    await conn.execute(
        "SELECT set_config('app.current_tenant_id', $1, true)", str(tenant.tenant_id)
    )
    await conn.execute("SELECT 1 FROM investigations WHERE id = $1 FOR UPDATE", run_id)


async def test_one_locked_run_does_not_stop_the_others_renewing(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    keeper: Keeper,
    locked_row: list[asyncpg.Connection],
) -> None:
    blocked, other = await _runs(app_pool, tenant, keeper.worker, 2)
    leases = {run: keeper.hold(run) for run in (blocked, other)}
    await keeper.rounds_after(0)
    await _lock_run(owner_pool, locked_row, tenant, blocked)
    # Two rounds after the lock: at least one started after it was taken.
    renewed = asyncio.create_task(keeper.rounds_after(keeper.keeper.rounds + 1))
    lost = asyncio.create_task(_ended(leases[other]))
    done, pending = await asyncio.wait({renewed, lost}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert renewed in done, f"the other run's lease ended {lost.result()!r} instead of renewing"
    assert not leases[other].ended.done()
    assert await _heartbeat_at(app_pool, tenant, other) is not None


async def test_a_run_taken_over_has_already_been_told_to_stop(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    keeper: Keeper,
    locked_row: list[asyncpg.Connection],
) -> None:
    # The run's own row is locked, so no renewal extends its lease, whether the renewal waits
    # on the lock (fn_renew_leases of 008) or skips the row (a SKIP LOCKED renewal); the lock
    # goes once the database's lease has expired, so that another worker can claim the run.
    first, second = await _runs(app_pool, tenant, keeper.worker, 2)
    lease = keeper.hold(second)
    keeper.hold(first)
    await keeper.rounds_after(0)
    await _lock_run(owner_pool, locked_row, tenant, second)
    thief = f"rt15-thief-{uuid.uuid4().hex[:6]}"

    async def taken_over() -> bool:
        if not await _lease_expired(app_pool, tenant, second):
            return False
        while locked_row:
            conn = locked_row.pop()
            await conn.execute("ROLLBACK")
            await owner_pool.release(conn)
        claims = await claim_batch(app_pool, thief, LEASE_S, 25, (), ["investigation"])
        return any(c.run_id == second for c in claims)

    try:
        await wait_until(taken_over, "another worker took the run over")
        # The original must not still be running it beside the new owner.
        held = not lease.ended.done()
        assert not held, "another worker owns the run; the original keeper still holds it"
    finally:
        # Whatever else the thief took (runs of earlier tests) goes back to the queue's rules.
        async with owner_pool.acquire() as conn:
            await conn.execute(
                "UPDATE investigations SET lease_expires_at = now() WHERE lease_owner = $1",
                thief,
            )


async def test_deleted_and_cancelled_runs_do_not_stop_the_others(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant, keeper: Keeper
) -> None:
    deleted, cancelled, kept = await _runs(app_pool, tenant, keeper.worker, 3)
    leases = {run: keeper.hold(run) for run in (deleted, cancelled, kept)}
    await keeper.rounds_after(0)
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute("DELETE FROM investigations WHERE id = $1", deleted)
        await conn.execute(
            "UPDATE investigations SET cancel_requested = true WHERE id = $1", cancelled
        )
    assert await asyncio.wait_for(leases[deleted].wait(), 60) == "lost"
    assert await asyncio.wait_for(leases[cancelled].wait(), 60) == "cancel"
    rounds = keeper.keeper.rounds
    before = await _heartbeat_at(app_pool, tenant, kept)
    await keeper.rounds_after(rounds)
    assert not leases[kept].ended.done()
    assert await _heartbeat_at(app_pool, tenant, kept) != before
    assert keeper.keeper.lost == 1


async def test_keeper_connection_killed_reconnects_without_losing_leases(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant, keeper: Keeper
) -> None:
    runs = await _runs(app_pool, tenant, keeper.worker, 3)
    leases = [keeper.hold(run) for run in runs]
    await keeper.rounds_after(0)
    conn = keeper.renewal._conn
    assert conn is not None
    backend = conn.get_server_pid()
    async with owner_pool.acquire() as owner:
        assert await owner.fetchval("SELECT pg_terminate_backend($1)", backend)
    rounds = keeper.keeper.rounds
    await keeper.rounds_after(rounds + 1)  # two good rounds after the kill
    fresh = keeper.renewal._conn
    assert fresh is not None and fresh.get_server_pid() != backend
    assert not any(lease.ended.done() for lease in leases)
    assert keeper.keeper.lost == 0
    for run in runs:
        assert not await _lease_expired(app_pool, tenant, run)


async def test_a_thousand_runs_keep_their_leases(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant, keeper: Keeper
) -> None:
    tokens = [uuid.uuid4() for _ in range(1000)]
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        rows = await conn.fetch(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps, status, lease_owner, lease_expires_at, lease_token_hash) "
            "SELECT $1, 'bulk run ' || g, 30, 60000, 8, 'running', $2, now() + interval '1 s', "
            "sha256(uuid_send(t)) FROM unnest($3::uuid[]) WITH ORDINALITY AS u(t, g) "
            "RETURNING id, lease_token_hash",
            tenant.tenant_id,
            keeper.worker,
            tokens,
        )
    token_of = {hashlib.sha256(t.bytes).digest(): t for t in tokens}
    for r in rows:
        keeper.renewal.tokens[r["id"]] = token_of[bytes(r["lease_token_hash"])]
    leases = [keeper.keeper.hold(r["id"]) for r in rows]
    # Three rounds (0.6 s apart) outlast the initial 1 s lease: only renewals kept them.
    await keeper.rounds_after(2)
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        expired = await conn.fetchval(
            "SELECT count(*) FROM investigations WHERE lease_owner = $1 "
            "AND (lease_expires_at < clock_timestamp() OR heartbeat_at IS NULL)",
            keeper.worker,
        )
    assert expired == 0
    assert keeper.keeper.lost == 0
    assert not any(lease.ended.done() for lease in leases)


async def test_more_leases_than_one_renewal_takes_are_still_renewed(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, keeper: Keeper
) -> None:
    (run,) = await _runs(app_pool, tenant, keeper.worker, 1)
    lease = keeper.hold(run)
    # Runs this process holds that no longer exist: answered as lost, never a reason to fail.
    for _ in range(10_000):
        keeper.keeper.hold(uuid.uuid4())
    renewed = asyncio.create_task(keeper.rounds_after(0))
    lost = asyncio.create_task(_ended(lease))
    done, pending = await asyncio.wait({renewed, lost}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert renewed in done, f"the run's lease ended {lost.result()!r}: no renewal went through"
    assert not lease.ended.done()


async def test_a_run_whose_lease_is_lost_is_stopped(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    database_urls: DatabaseUrls,
) -> None:
    worker = f"rt15-sup-{uuid.uuid4().hex[:6]}"
    runtime = JobRuntime(app_pool, worker, lease_s=LEASE_S, heartbeat_url=database_urls.app)
    (run,) = await _runs(app_pool, tenant, worker, 1)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.Event().wait()  # a run that would go on forever
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    try:
        supervised = asyncio.create_task(runtime.supervise(claim_of(run), work(), timeout_s=600))
        await started.wait()
        await wait_until(lambda: _truthy(runtime.leases.rounds > 0), "a first renewal")
        # Another worker takes the run over (its lease owner changes under the keeper).
        async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "UPDATE investigations SET lease_owner = 'another-worker' WHERE id = $1", run
            )
        outcome = await asyncio.wait_for(supervised, 60)
    finally:
        await runtime.aclose()
        async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
            await conn.execute("DELETE FROM investigations WHERE id = $1", run)
    assert outcome.ended == "lost"
    assert cancelled.is_set()
