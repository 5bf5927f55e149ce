"""Fixtures shared by the red-team tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from llm_service.db.urls import DatabaseUrls


@pytest.fixture
async def app_conn(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection as llm_app: the compromised session."""
    conn = await asyncpg.connect(database_urls.app)
    try:
        yield conn
    finally:
        await conn.close()
