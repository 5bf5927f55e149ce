"""Fixtures shared by the red-team tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from llm_service.db.urls import DatabaseUrls
from tests.helpers.app_role import end_remembered_runs, has_remembered_runs


@pytest.fixture
async def app_conn(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection as llm_app: the compromised session."""
    conn = await asyncpg.connect(database_urls.app)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def other_app_conn(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    """A second raw llm_app session (another worker's, or the attacker's second one)."""
    conn = await asyncpg.connect(database_urls.app)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
async def _end_remembered_runs(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Runs a test made (`remember_run`) are ended at its teardown."""
    yield
    if has_remembered_runs():
        await end_remembered_runs(request.getfixturevalue("owner_pool"))
