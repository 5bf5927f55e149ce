"""The real application served for a test (over ASGI), its settings, and tenants with demo data."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx

from llm_service.api.app import create_app
from llm_service.db.pool import tenant_transaction
from llm_service.demo_data import generate_demo_data
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant

MODEL = "openai/gpt-4o-mini"


def openai_settings(base: Settings, **overrides: object) -> Settings:
    """`base` with the OpenAI chat model configured, two attempts (and any overrides)."""
    return base.model_copy(update={"llm_model": MODEL, "llm_max_attempts": 2, **overrides})


@asynccontextmanager
async def asgi_client(
    settings: Settings, pool: asyncpg.Pool, *, run_workers: bool | None = False
) -> AsyncIterator[httpx.AsyncClient]:
    """The real application with its lifespan run, and an ASGI client of it."""
    app = create_app(settings, pool=pool, run_workers=run_workers)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def bearer(tenant: CreatedTenant) -> dict[str, str]:
    """The tenant's Authorization header."""
    return {"Authorization": f"Bearer {tenant.api_key}"}


async def create_demo_tenant(
    owner_pool: asyncpg.Pool, name: str, *, events: int, seed: int
) -> CreatedTenant:
    """A new tenant (a random suffix on `name`) with `events` demo events."""
    tenant = await create_tenant(owner_pool, f"{name}-{uuid.uuid4().hex[:8]}")
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await generate_demo_data(conn, tenant.tenant_id, events=events, seed=seed)
    return tenant


@asynccontextmanager
async def demo_tenant(
    owner_pool: asyncpg.Pool, name: str, *, events: int, seed: int
) -> AsyncIterator[CreatedTenant]:
    """`create_demo_tenant` for the block; the tenant (and its rows) deleted afterwards."""
    tenant = await create_demo_tenant(owner_pool, name, events=events, seed=seed)
    try:
        yield tenant
    finally:
        async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
            await conn.execute("DELETE FROM tenants WHERE id = $1", tenant.tenant_id)


def free_port() -> int:
    """A loopback TCP port free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
