"""Every retention query: one batch per call of a narrow definer function (SKIP LOCKED)."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def cutoff(conn: asyncpg.Connection, days: int) -> datetime:
    """The database's now() minus `days` days."""
    value: datetime = await conn.fetchval("SELECT now() - make_interval(days => $1)", days)
    return value


async def purge_call_prompts(conn: asyncpg.Connection, before: datetime, batch_size: int) -> int:
    """Remove prompt content from up to `batch_size` calls created before `before`."""
    n: int = await conn.fetchval("SELECT fn_purge_llm_call_prompts($1, $2)", before, batch_size)
    return n


async def purge_validation_payloads(
    conn: asyncpg.Connection, before: datetime, batch_size: int
) -> int:
    """Clear the payloads of up to `batch_size` validation failures created before `before`."""
    n: int = await conn.fetchval(
        "SELECT fn_purge_llm_validation_payloads($1, $2)", before, batch_size
    )
    return n


async def purge_expired_cache(conn: asyncpg.Connection, batch_size: int) -> int:
    """Delete up to `batch_size` expired explanation cache entries."""
    n: int = await conn.fetchval("SELECT fn_purge_expired_explanation_cache($1)", batch_size)
    return n
