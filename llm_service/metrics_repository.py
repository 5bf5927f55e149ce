"""What the metrics scrape reads from the database."""

from __future__ import annotations

import asyncpg

_QUEUE_DEPTH = "SELECT kind, status, runs FROM fn_queue_depth()"


async def queue_depth(conn: asyncpg.Connection) -> list[tuple[str, str, int]]:
    """(kind, status, runs) for every queued job kind and status, from fn_queue_depth()."""
    rows = await conn.fetch(_QUEUE_DEPTH)
    return [(r["kind"], r["status"], r["runs"]) for r in rows]
