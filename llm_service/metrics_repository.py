"""What the metrics scrape reads from the database."""

from __future__ import annotations

import asyncpg

from llm_service.investigations.repository import TABLE as INVESTIGATIONS
from llm_service.optimizations.repository import TABLE as OPTIMIZATIONS

_QUEUE_DEPTH = "SELECT kind, status, runs FROM fn_queue_depth()"
#: Every series the queue depth has, zero when no job is in that state (an empty queue is 0,
#: not a missing series: alerts and dashboards read "no data" as unknown).
QUEUE_SERIES = tuple(
    (table.kind, status)
    for table in (INVESTIGATIONS, OPTIMIZATIONS)
    for status in ("queued", "running")
)


async def queue_depth(conn: asyncpg.Connection) -> list[tuple[str, str, int]]:
    """(kind, status, runs) for every job kind and live status (0 when none), from
    fn_queue_depth()."""
    counts = {(r["kind"], r["status"]): int(r["runs"]) for r in await conn.fetch(_QUEUE_DEPTH)}
    series = dict.fromkeys(QUEUE_SERIES, 0) | counts
    return [(kind, status, runs) for (kind, status), runs in series.items()]
