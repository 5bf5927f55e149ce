"""Pools release connections without a reset query, yet carry nothing from one transaction to the
next: tenant context and timeouts are transaction-scoped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.tenants.service import CreatedTenant


@pytest.fixture
async def bare_pool(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Pool]:
    """One connection, released without a reset: every checkout reuses it as it was left."""
    pool = await create_pool(database_urls.app, application_name="tests-bare", max_size=1)
    yield pool
    await pool.close()


async def test_tenant_and_timeout_do_not_outlive_their_transaction(
    bare_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    async with bare_pool.acquire() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
    for current in (tenant, other_tenant, tenant):
        async with tenant_transaction(bare_pool, current.tenant_id) as conn:
            await conn.execute("SELECT set_config('statement_timeout', '5', true)")
            assert await conn.fetchval("SELECT pg_backend_pid()") == backend
            visible = await conn.fetch("SELECT id FROM tenants")
            assert [r["id"] for r in visible] == [current.tenant_id]
        async with bare_pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_setting('app.current_tenant_id', true)") in (
                None,
                "",
            )
            assert await conn.fetchval("SHOW statement_timeout") != "5ms"
            assert await conn.fetchval("SELECT count(*) FROM tenants") == 0


async def test_a_failed_transaction_is_rolled_back_before_the_next_checkout(
    bare_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with tenant_transaction(bare_pool, tenant.tenant_id) as conn:
            await conn.execute("SELECT 1 / 0")
    async with bare_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM tenants") == 0
        assert not conn.is_in_transaction()
