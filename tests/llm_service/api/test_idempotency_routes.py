"""One Idempotency-Key rule on every POST that takes one, attacked through the HTTP API.

Same key + same request (however it is written) = the original, created once even when the
retries race; same key + a different request = 409 with a clear message, the original intact;
another tenant's same key = an independent resource.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.idempotency import fingerprint
from llm_service.investigations.schemas import InvestigationCreate
from llm_service.investigations.service import limits, request_of
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant


@dataclass(frozen=True)
class Endpoint:
    """A POST that takes an Idempotency-Key: its table, a request, and others."""

    url: str
    table: str
    body: str  # the request, as JSON text
    same: str  # the same request written differently (key order, spacing, number spelling)
    different: dict[str, Any]  # another request

    def variant(self, i: int) -> dict[str, Any]:
        """The i-th of many distinct requests."""
        if self.table == "investigations":
            return {"question": f"Why did revenue fall, take {i}?"}
        return {"total_budget_usd": f"{1000 + i}.00", "period": PERIOD}


PERIOD = {"start": "2025-01-01", "end": "2025-02-01"}
INVESTIGATIONS = Endpoint(
    url="/v1/investigations",
    table="investigations",
    body='{"question": "Why did email revenue fall?", "max_cost_usd": "0.10", "timeout_s": 30}',
    same='{ "timeout_s" : 30.0,\n  "max_cost_usd": 0.1, '
    '"question":"  Why did email revenue fall?\u00a0" }',
    different={"question": "Why did email revenue rise?", "max_cost_usd": "0.10", "timeout_s": 30},
)
BUDGETS = Endpoint(
    url="/v1/budget-optimizations",
    table="budget_optimization_jobs",
    body=json.dumps(
        {"total_budget_usd": "10000.00", "period": PERIOD, "bounds": {"email": {"min_usd": 100}}}
    ),
    same='{"bounds":{"email":{"min_usd":"100.0"}},"period":{"end":"2025-02-01","start":"2025-01-01"},'
    '"total_budget_usd":10000,"model_type":"last_touch"}',
    different={"total_budget_usd": "9999.99", "period": PERIOD},
)
ENDPOINTS = [pytest.param(INVESTIGATIONS, id="investigations"), pytest.param(BUDGETS, id="budgets")]


def _headers(tenant: CreatedTenant, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {tenant.api_key}", "content-type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


async def _post(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    tenant: CreatedTenant,
    body: str | dict[str, Any],
    key: str | None,
) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return await client.post(endpoint.url, content=content, headers=_headers(tenant, key))


async def _rows(pool: asyncpg.Pool, endpoint: Endpoint, tenant: CreatedTenant, key: str) -> int:
    async with tenant_transaction(pool, tenant.tenant_id) as conn:
        count: int = await conn.fetchval(
            f"SELECT count(*) FROM {endpoint.table} WHERE idempotency_key = $1 AND tenant_id = $2",
            key,
            tenant.tenant_id,
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


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_the_same_request_written_differently_returns_the_original(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, tenant: CreatedTenant, endpoint: Endpoint
) -> None:
    key = f"retry-{uuid.uuid4()}"
    first = await _post(client, endpoint, tenant, endpoint.body, key)
    again = await _post(client, endpoint, tenant, endpoint.body, key)
    same = await _post(client, endpoint, tenant, endpoint.same, key)
    assert first.status_code == 202, first.text
    assert (again.status_code, same.status_code) == (200, 200), (again.text, same.text)
    assert first.json()["id"] == again.json()["id"] == same.json()["id"]
    assert await _rows(owner_pool, endpoint, tenant, key) == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_the_same_key_with_a_different_request_is_409_and_keeps_the_original(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, tenant: CreatedTenant, endpoint: Endpoint
) -> None:
    key = f"retry-{uuid.uuid4()}"
    first = await _post(client, endpoint, tenant, endpoint.body, key)
    response = await _post(client, endpoint, tenant, endpoint.different, key)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert "Idempotency-Key" in error["message"] and "different request" in error["message"]
    assert await _rows(owner_pool, endpoint, tenant, key) == 1
    original = await client.get(f"{endpoint.url}/{first.json()['id']}", headers=_headers(tenant))
    assert original.json() | {"llm_calls": None, "tool_calls": None} == first.json() | {
        "llm_calls": None,
        "tool_calls": None,
    }
    # The original request still replays after the refused one.
    assert (await _post(client, endpoint, tenant, endpoint.body, key)).status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_concurrent_retries_create_one_resource(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, tenant: CreatedTenant, endpoint: Endpoint
) -> None:
    key = f"race-{uuid.uuid4()}"
    responses = await asyncio.gather(
        *(_post(client, endpoint, tenant, endpoint.body, key) for _ in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 9 + [202], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await _rows(owner_pool, endpoint, tenant, key) == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_concurrent_different_requests_with_one_key_create_one_and_refuse_the_rest(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, tenant: CreatedTenant, endpoint: Endpoint
) -> None:
    key = f"race-{uuid.uuid4()}"
    responses = await asyncio.gather(
        *(_post(client, endpoint, tenant, endpoint.variant(i), key) for i in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] + [409] * 9, [r.text for r in responses]
    assert await _rows(owner_pool, endpoint, tenant, key) == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_another_tenants_same_key_is_independent(
    client: httpx.AsyncClient,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    endpoint: Endpoint,
) -> None:
    key = f"shared-{uuid.uuid4()}"
    mine = await _post(client, endpoint, tenant, endpoint.body, key)
    # Another tenant may use the key for anything, a different request included: no 409, no leak.
    theirs = await _post(client, endpoint, other_tenant, endpoint.different, key)
    assert (mine.status_code, theirs.status_code) == (202, 202), theirs.text
    assert mine.json()["id"] != theirs.json()["id"]
    assert await _rows(owner_pool, endpoint, tenant, key) == 1
    assert await _rows(owner_pool, endpoint, other_tenant, key) == 1
    replay = await _post(client, endpoint, tenant, endpoint.body, key)
    assert (replay.status_code, replay.json()["id"]) == (200, mine.json()["id"])


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_without_a_key_every_request_is_new(
    client: httpx.AsyncClient, tenant: CreatedTenant, endpoint: Endpoint
) -> None:
    first = await _post(client, endpoint, tenant, endpoint.body, None)
    second = await _post(client, endpoint, tenant, endpoint.body, None)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["id"] != second.json()["id"]


async def _wait_until_blocked(pool: asyncpg.Pool, table: str) -> None:
    """Until some session's INSERT into `table` waits on a lock (the racing request)."""
    # The state is another session's, seen only in pg_stat_activity: no Event can signal it.
    async with asyncio.timeout(30):
        while not await pool.fetchval(  # noqa: ASYNC110
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE $1",
            f"%INSERT INTO {table}%",
        ):
            await asyncio.sleep(0.01)  # polling pg_stat_activity


@pytest.mark.parametrize(
    ("question", "commit", "expected"),
    [
        ("Why did email revenue fall?", True, 200),  # the racing twin won: its run is returned
        ("Why did email revenue rise?", True, 409),  # another request won the key
        ("Why did email revenue fall?", False, 202),  # the other rolled back: this one creates
    ],
)
async def test_a_request_racing_an_uncommitted_twin_waits_for_it(
    client: httpx.AsyncClient,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    test_settings: Settings,
    question: str,
    commit: bool,
    expected: int,
) -> None:
    key = f"twin-{uuid.uuid4()}"
    async with owner_pool.acquire() as conn:
        twin = conn.transaction()
        await twin.start()
        await conn.execute(
            "SELECT set_config('app.current_tenant_id', $1, true)", str(tenant.tenant_id)
        )
        twin_id = await conn.fetchval(
            """INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms,
                                           max_steps, idempotency_key)
               VALUES ($1, $2, $3, 30000, 12, $4) RETURNING id""",
            tenant.tenant_id,
            question,
            Decimal(10),
            key,
        )
        # As the service takes a key (migration 009): one row per tenant and key, any kind.
        twin_request = InvestigationCreate(question=question, max_cost_usd="0.10", timeout_s=30)
        await conn.execute(
            """INSERT INTO job_idempotency_keys (tenant_id, idempotency_key, kind, run_id,
                                                 request_hash)
               VALUES ($1, $2, 'investigation', $3, $4)""",
            tenant.tenant_id,
            key,
            twin_id,
            fingerprint(request_of(twin_request, limits(test_settings))),
        )
        racing = asyncio.create_task(
            _post(client, INVESTIGATIONS, tenant, INVESTIGATIONS.body, key)
        )
        await _wait_until_blocked(owner_pool, "investigations")
        await (twin.commit() if commit else twin.rollback())
        response = await racing
    assert response.status_code == expected, response.text
    if expected == 200:
        assert response.json()["id"] == str(twin_id)
    assert await _rows(owner_pool, INVESTIGATIONS, tenant, key) == 1
