"""Shared fixtures: one real PostgreSQL per test session, built by the real migrations.

With DATABASE_URL unset, an embedded server runs in a temporary directory and is deleted at the
end. With DATABASE_URL set, a fresh database is created on that server for the session and
dropped afterwards. Tests isolate themselves by creating their own tenants.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psycopg
import pytest
from psycopg import sql

from llm_service.api.app import create_app
from llm_service.db import migrate
from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.db.pool import create_pool
from llm_service.db.urls import DatabaseUrls, resolve_urls
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant

# Nothing in the tests may need a key or reach a provider.
for _var in ("LLM_MODEL", "LLM_API_BASE", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
    os.environ.pop(_var, None)
# respx intercepts litellm's httpx transport only; the production (aiohttp) transport is tested
# against a real loopback server (tests/llm_service/llm/test_gateway_wire.py).
os.environ.setdefault("LLM_HTTP_TRANSPORT", "httpx")


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def test_settings_base() -> Settings:
    """Settings read from the environment, minus anything that would reach a provider."""
    return Settings(llm_model=None, llm_api_base=None)


@pytest.fixture(scope="session")
def database_urls(test_settings_base: Settings) -> Iterator[DatabaseUrls]:
    """Owner and application URLs of a freshly migrated database for this session."""
    admin_url = os.environ.get("DATABASE_URL")
    if admin_url:
        name = f"llm_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        owner = _with_database(admin_url, name)
        try:
            migrate.upgrade(owner)
            yield resolve_urls(test_settings_base, owner)
        finally:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        return
    server = start_embedded(Path(tempfile.mkdtemp(prefix="llm-test-")), cleanup="delete")
    try:
        owner = embedded_url(server)
        migrate.upgrade(owner)
        yield resolve_urls(test_settings_base, owner)
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def test_settings(test_settings_base: Settings, database_urls: DatabaseUrls) -> Settings:
    """Settings pointing at the session's database."""
    return test_settings_base.model_copy(
        update={"database_url": database_urls.owner, "app_database_url": database_urls.app}
    )


@pytest.fixture(scope="session")
async def owner_pool(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Pool]:
    """A pool connected as the database owner (migrations, tenant creation)."""
    pool = await create_pool(database_urls.owner, application_name="tests-owner", max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def app_pool(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Pool]:
    """A pool connected as the application role: what the service itself uses."""
    pool = await create_pool(database_urls.app, application_name="tests-app", max_size=8)
    yield pool
    await pool.close()


@pytest.fixture
async def tenant(owner_pool: asyncpg.Pool) -> CreatedTenant:
    """A fresh tenant with its API key."""
    return await create_tenant(owner_pool, f"tenant-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def other_tenant(owner_pool: asyncpg.Pool) -> CreatedTenant:
    """A second fresh tenant, for isolation tests."""
    return await create_tenant(owner_pool, f"other-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def new_tenant(tenant: CreatedTenant) -> uuid.UUID:
    """The id of a fresh tenant."""
    return tenant.tenant_id


@pytest.fixture
async def client(
    test_settings: Settings, app_pool: asyncpg.Pool
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client speaking to the real application over ASGI (lifespan run), as llm_app."""
    app = create_app(test_settings, pool=app_pool)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http
