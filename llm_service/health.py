"""Readiness: can the application role reach the database, and is it at the migration head?"""

from __future__ import annotations

from typing import Any

import asyncpg

from llm_service.db.queries import ALEMBIC_REVISIONS


async def readiness(pool: asyncpg.Pool, expected_heads: list[str]) -> dict[str, Any]:
    """A small report: ready, the database revision, and what is wrong if anything."""
    try:
        async with pool.acquire(timeout=2) as conn:
            rows = await conn.fetch(ALEMBIC_REVISIONS)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return {"ready": False, "problem": f"database unreachable: {type(exc).__name__}"}
    revisions = sorted(row["version_num"] for row in rows)
    if revisions != sorted(expected_heads):
        return {
            "ready": False,
            "problem": f"database at {revisions or 'no revision'}, code expects {expected_heads}",
            "revision": revisions,
        }
    return {"ready": True, "revision": revisions}
