"""Fixtures of the explanation tests: tenants with demo data (as the owner) and model env."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.demo_data import generate_demo_data
from llm_service.tenants.service import CreatedTenant, create_tenant

DEMO_EVENTS = 10_000
DEMO_SEED = 17


async def _demo_tenant(owner_pool: asyncpg.Pool, name: str) -> CreatedTenant:
    """A tenant with 90 days of demo data up to today (the same seed: equal data per tenant)."""
    tenant = await create_tenant(owner_pool, f"{name}-{uuid.uuid4().hex[:8]}")
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await generate_demo_data(conn, tenant.tenant_id, events=DEMO_EVENTS, seed=DEMO_SEED)
    return tenant


async def _drop(owner_pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    """Delete a tenant and, by cascade, its rows (later tests scan less)."""
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute("DELETE FROM tenants WHERE id = $1", tenant.tenant_id)


@pytest.fixture(scope="package")
async def demo_tenant(owner_pool: asyncpg.Pool) -> AsyncIterator[CreatedTenant]:
    """Tenant A, with demo data."""
    tenant = await _demo_tenant(owner_pool, "explain-a")
    yield tenant
    await _drop(owner_pool, tenant)


@pytest.fixture(scope="package")
async def demo_tenant_b(owner_pool: asyncpg.Pool) -> AsyncIterator[CreatedTenant]:
    """Tenant B, with its own demo data (equal to A's: same seed, other ids)."""
    tenant = await _demo_tenant(owner_pool, "explain-b")
    yield tenant
    await _drop(owner_pool, tenant)


@pytest.fixture
def openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OpenAI key for litellm (every call is mocked with respx)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
