"""Fixtures shared by the red-team tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from llm_service.db.urls import DatabaseUrls
from tests.helpers.app_role import end_remembered_runs, has_remembered_runs


@asynccontextmanager
async def _raw_app_session(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection as llm_app, closed at the end."""
    conn = await asyncpg.connect(database_urls.app)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def app_conn(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection as llm_app: the compromised session."""
    async with _raw_app_session(database_urls) as conn:
        yield conn


@pytest.fixture
async def other_app_conn(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    """A second raw llm_app session (another worker's, or the attacker's second one)."""
    async with _raw_app_session(database_urls) as conn:
        yield conn


@pytest.fixture(autouse=True)
async def _end_remembered_runs(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Runs a test made (`remember_run`) are ended at its teardown."""
    yield
    if has_remembered_runs():
        await end_remembered_runs(request.getfixturevalue("owner_pool"))
