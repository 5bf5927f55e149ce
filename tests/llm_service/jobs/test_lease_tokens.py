"""Lease tokens attacked: the claim's token is the only proof of holding a run (migration 009).

The row keeps sha256 of the token, never the token; the application role cannot write that hash;
a takeover (even by the same worker name) fences the earlier token out of renewal, hand-back
and the run's end; the API never shows the token.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import httpx
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.investigations import repository as investigations
from llm_service.jobs import repository
from llm_service.jobs.kinds import Claim
from llm_service.tenants.service import CreatedTenant
from llm_service.workers.worker import claim_batch

QUESTION = {"question": "Why did email revenue fall?"}


def _auth(tenant: CreatedTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


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


async def _claimed(
    client: httpx.AsyncClient, app_pool: asyncpg.Pool, tenant: CreatedTenant, worker: str
) -> Claim:
    created = await client.post("/v1/investigations", json=QUESTION, headers=_auth(tenant))
    assert created.status_code == 202, created.text
    run_id = UUID(created.json()["id"])
    claims = await claim_batch(app_pool, worker, lease_s=60, limit=500, kinds=["investigation"])
    [claim] = [c for c in claims if c.run_id == run_id]
    return claim


async def test_the_row_keeps_only_the_hash_of_the_token_the_claim_returned(
    client: httpx.AsyncClient, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    claim = await _claimed(client, app_pool, tenant, f"tok-{uuid.uuid4().hex[:6]}")
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        row = await conn.fetchrow("SELECT * FROM investigations WHERE id = $1", claim.run_id)
    assert row["lease_token_hash"] == hashlib.sha256(claim.lease_token.bytes).digest()
    values = {str(v) for v in row.values()} | {
        bytes(v).hex() for v in row.values() if isinstance(v, bytes)
    }
    assert str(claim.lease_token) not in values
    assert claim.lease_token.hex not in values
    assert "lease_token" not in repr(claim)  # kept out of logs of the claim


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE investigations SET lease_token_hash = sha256('x'::bytea) WHERE id = $1",
        "UPDATE budget_optimization_jobs SET lease_token_hash = sha256('x'::bytea) WHERE id = $1",
    ],
)
async def test_the_app_role_cannot_write_a_lease_token_hash(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, statement: str
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement, uuid.uuid4())
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO investigations (tenant_id, question, lease_token_hash) "
                "VALUES ($1, 'Why?', sha256('x'::bytea))",
                tenant.tenant_id,
            )


async def test_a_takeover_by_the_same_worker_name_fences_the_earlier_token(
    client: httpx.AsyncClient,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    worker = f"same-{uuid.uuid4().hex[:6]}"
    first = await _claimed(client, app_pool, tenant, worker)
    await owner_pool.execute(
        "UPDATE investigations SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        first.run_id,
    )
    # The same worker, no longer executing it (a lost answer): it takes the run over, anew.
    again = await claim_batch(app_pool, worker, lease_s=60, limit=500, kinds=["investigation"])
    [second] = [c for c in again if c.run_id == first.run_id]
    assert second.takeover and second.lease_token != first.lease_token

    async with app_pool.acquire() as conn:
        assert await repository.renew_leases(conn, worker, 60, [first.lease_token]) == {}
        assert await repository.renew_leases(conn, worker, 60, [second.lease_token]) == {
            first.run_id: False
        }
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        table = investigations.TABLE
        assert not await repository.holds_lease(
            conn, table, first.run_id, worker, first.lease_token
        )
        assert not await repository.hand_back(conn, table, first.run_id, worker, first.lease_token)
        ended = await investigations.finish(
            conn, first.run_id, worker, first.lease_token, status="failed", reason="stale",
            elapsed_ms=1, result=None, degraded=False,
        )  # fmt: skip
        assert ended is None
        assert await repository.holds_lease(conn, table, first.run_id, worker, second.lease_token)
        assert await repository.hand_back(conn, table, first.run_id, worker, second.lease_token)
    status = await owner_pool.fetchval(
        "SELECT status FROM investigations WHERE id = $1", first.run_id
    )
    assert status == "running"  # the stale finish recorded nothing


async def test_no_answer_of_the_api_shows_a_lease_token(
    client: httpx.AsyncClient, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    claim = await _claimed(client, app_pool, tenant, f"api-{uuid.uuid4().hex[:6]}")
    budget = await client.post(
        "/v1/budget-optimizations",
        json={"total_budget_usd": "10.00", "period": {"start": "2025-01-01", "end": "2025-02-01"}},
        headers=_auth(tenant),
    )
    assert budget.status_code == 202, budget.text
    jobs = await claim_batch(
        app_pool, "api-b", lease_s=60, limit=500, kinds=["budget_optimization"]
    )
    [job] = [c for c in jobs if str(c.run_id) == budget.json()["id"]]
    texts = [
        (await client.get(url, headers=_auth(tenant))).text
        for url in (
            f"/v1/investigations/{claim.run_id}",
            "/v1/investigations",
            f"/v1/budget-optimizations/{job.run_id}",
        )
    ]
    for text in texts:
        json.loads(text)
        assert "lease_token" not in text
        for token in (claim.lease_token, job.lease_token):
            assert str(token) not in text and token.hex not in text


async def test_a_row_locked_elsewhere_is_skipped_not_waited_for_and_the_others_renew(
    client: httpx.AsyncClient,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    worker = f"lock-{uuid.uuid4().hex[:6]}"
    locked = await _claimed(client, app_pool, tenant, worker)
    free = await _claimed(client, app_pool, tenant, worker)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        before = await conn.fetchval(
            "SELECT lease_expires_at FROM investigations WHERE id = $1", free.run_id
        )
    async with owner_pool.acquire() as holder, holder.transaction():
        # Another transaction (an operator's UPDATE, a slow cancel) holds the row lock.
        await holder.execute("SELECT 1 FROM investigations WHERE id = $1 FOR UPDATE", locked.run_id)
        async with app_pool.acquire() as conn:
            # The timeout is only a safety net: a renewal that waited on the lock never returns.
            held = await repository.renew_leases(
                conn, worker, 60, [locked.lease_token, free.lease_token], timeout_s=30
            )
    assert held == {locked.run_id: None, free.run_id: False}
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        after = await conn.fetchval(
            "SELECT lease_expires_at FROM investigations WHERE id = $1", free.run_id
        )
    assert after > before


async def test_a_cancel_is_answered_even_while_the_row_is_locked(
    client: httpx.AsyncClient,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    worker = f"lockc-{uuid.uuid4().hex[:6]}"
    claim = await _claimed(client, app_pool, tenant, worker)
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute(
            "UPDATE investigations SET cancel_requested = true WHERE id = $1", claim.run_id
        )
    async with owner_pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM investigations WHERE id = $1 FOR UPDATE", claim.run_id)
        async with app_pool.acquire() as conn:
            held = await repository.renew_leases(
                conn, worker, 60, [claim.lease_token], timeout_s=30
            )
    assert held == {claim.run_id: True}
