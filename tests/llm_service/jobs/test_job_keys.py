"""One Idempotency-Key per tenant across every job kind, attacked through the HTTP API.

A key names one run of one kind: reused for another kind it is a 409 whichever kind came first,
even when both requests race; another tenant's same key is independent and invisible.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.tenants.service import CreatedTenant

PERIOD = {"start": "2025-01-01", "end": "2025-02-01"}
INVESTIGATION = ("/v1/investigations", {"question": "Why did email revenue fall?"})
BUDGET = ("/v1/budget-optimizations", {"total_budget_usd": "10000.00", "period": PERIOD})


def _headers(tenant: CreatedTenant, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}", "Idempotency-Key": key}


async def _post(
    client: httpx.AsyncClient, tenant: CreatedTenant, kind: tuple[str, Any], key: str
) -> httpx.Response:
    url, body = kind
    return await client.post(url, json=body, headers=_headers(tenant, key))


async def _runs_with(owner_pool: asyncpg.Pool, tenant: CreatedTenant, key: str) -> int:
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        count: int = await conn.fetchval(
            "SELECT (SELECT count(*) FROM investigations WHERE idempotency_key = $1)"
            " + (SELECT count(*) FROM budget_optimization_jobs WHERE idempotency_key = $1)",
            key,
        )
    return count


@pytest.fixture(autouse=True)
async def _nothing_queued_stays(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> AsyncIterator[None]:
    """What these tests queue is never run: end it so no other test's worker picks it up."""
    yield
    for t in (tenant, other_tenant):
        async with tenant_transaction(owner_pool, t.tenant_id) as conn:
            for table in ("investigations", "budget_optimization_jobs"):
                await conn.execute(
                    f"UPDATE {table} SET status = 'cancelled', reason = 'test cleanup', "
                    "finished_at = now() WHERE status = 'queued'"
                )


@pytest.mark.parametrize(
    ("first", "second"),
    [(BUDGET, INVESTIGATION), (INVESTIGATION, BUDGET)],
    ids=["budget-then-investigation", "investigation-then-budget"],
)
async def test_a_key_of_one_kind_is_409_for_the_other_and_replays_for_its_own(
    client: httpx.AsyncClient,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    first: tuple[str, Any],
    second: tuple[str, Any],
) -> None:
    key = f"kinds-{uuid.uuid4().hex}"
    made = await _post(client, tenant, first, key)
    assert made.status_code == 202, made.text
    refused = await _post(client, tenant, second, key)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "conflict"
    again = await _post(client, tenant, first, key)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == made.json()["id"]
    assert await _runs_with(owner_pool, tenant, key) == 1


async def test_racing_requests_of_both_kinds_with_one_key_make_exactly_one_run(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    key = f"race-{uuid.uuid4().hex}"
    kinds = [INVESTIGATION, BUDGET] * 5
    answers = await asyncio.gather(*(_post(client, tenant, kind, key) for kind in kinds))
    statuses = [a.status_code for a in answers]
    assert statuses.count(202) == 1, statuses
    winner = statuses.index(202)
    for kind, answer in zip(kinds, answers, strict=True):
        if answer.status_code == 200:  # a retry of the winner's own kind and request
            assert kind == kinds[winner]
            assert answer.json()["id"] == answers[winner].json()["id"]
        else:
            assert answer.status_code in (202, 409), answer.text
    assert sorted(set(statuses)) in ([200, 202, 409], [202, 409])
    assert await _runs_with(owner_pool, tenant, key) == 1


async def test_another_tenant_uses_the_same_key_for_another_kind_independently(
    client: httpx.AsyncClient,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    key = f"tenants-{uuid.uuid4().hex}"
    mine = await _post(client, tenant, INVESTIGATION, key)
    theirs = await _post(client, other_tenant, BUDGET, key)
    assert (mine.status_code, theirs.status_code) == (202, 202), theirs.text
    # Each tenant sees its own key only (row-level security as the application role).
    for who, kind, run in (
        (tenant, "investigation", mine),
        (other_tenant, "budget_optimization", theirs),
    ):
        async with tenant_transaction(app_pool, who.tenant_id) as conn:
            rows = await conn.fetch(
                "SELECT kind, run_id::text FROM job_idempotency_keys WHERE idempotency_key = $1",
                key,
            )
        assert [tuple(r) for r in rows] == [(kind, run.json()["id"])]
    async with app_pool.acquire() as conn:  # no tenant set: nothing
        assert await conn.fetchval("SELECT count(*) FROM job_idempotency_keys") == 0


async def test_a_taken_key_cannot_be_moved_or_released_by_the_app_role(
    client: httpx.AsyncClient, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    key = f"fixed-{uuid.uuid4().hex}"
    assert (await _post(client, tenant, INVESTIGATION, key)).status_code == 202
    for statement in (
        "UPDATE job_idempotency_keys SET request_hash = repeat('0', 64) WHERE idempotency_key = $1",
        "UPDATE job_idempotency_keys SET run_id = gen_random_uuid() WHERE idempotency_key = $1",
        "DELETE FROM job_idempotency_keys WHERE idempotency_key = $1",
    ):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement, key)
