"""How many connections a worker process's pool gets: one per run it keeps in flight, within
what the PostgreSQL server still allows.

A run holds a connection only while one of its short transactions runs, but under load each
round trip of a transaction waits for the event loop too, so connections stay held longer than
their statements take: with far fewer connections than runs in flight, the runs queue for the
pool (measured in bench/RESULTS.md "## Jobs"). The server's `max_connections` is a hard limit
shared with every other process, so the pool is clamped to what is left of it, keeping
`HEADROOM` connections for everything else (the API, the CLI, migrations, an operator's psql)
and `OWN_CONNECTIONS` for the worker's two connections outside the pool: the claim loop's
(workers/claimer.py) and the lease keeper's (jobs/runtime.py DatabaseRenewal).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from llm_service.db.pool import create_pool
from llm_service.settings import Settings
from llm_service.workers import queries

_log = logging.getLogger(__name__)

#: Connections left to other clients when the pool is sized from the server's limit.
HEADROOM = 10
#: Pool connections beyond one per run: the reservation sweeper's (workers/sweeper.py).
EXTRA = 1
#: The worker's connections outside its pool: the claim loop's and the lease keeper's.
OWN_CONNECTIONS = 2


@dataclass(frozen=True)
class ConnectionBudget:
    """The server's connection limit, its reserved slots and the client connections in use."""

    max_connections: int
    reserved: int
    in_use: int

    @property
    def available(self) -> int:
        """Connections a worker's pool may open and still leave the worker's OWN_CONNECTIONS
        and HEADROOM to everyone else."""
        left = self.max_connections - self.reserved - self.in_use - HEADROOM - OWN_CONNECTIONS
        return max(1, left)


async def read_budget(conn: asyncpg.Connection) -> ConnectionBudget:
    """The server's connection budget, as seen from `conn` (any role)."""
    row = await conn.fetchrow(queries.CONNECTION_BUDGET)
    assert row is not None
    return ConnectionBudget(row["max_connections"], row["reserved"], row["in_use"])


def worker_pool_size(requested: int | None, concurrency: int, budget: ConnectionBudget) -> int:
    """`requested` (WORKER_POOL_SIZE), else one connection per run in flight plus EXTRA; never
    more than the budget leaves."""
    wanted = requested if requested is not None else concurrency + EXTRA
    size = max(1, min(wanted, budget.available))
    if size < wanted:
        _log.warning(
            "worker pool clamped to what the server allows",
            extra={
                "wanted": wanted,
                "pool_size": size,
                "max_connections": budget.max_connections,
                "in_use": budget.in_use,
            },
        )
    return size


async def create_worker_pool(
    url: str, settings: Settings, concurrency: int, *, application_name: str
) -> asyncpg.Pool:
    """The worker's pool on `url` (the application role), sized by `worker_pool_size`."""
    conn = await asyncpg.connect(url)
    try:
        budget = await read_budget(conn)
    finally:
        await conn.close()
    size = worker_pool_size(settings.worker_pool_size, concurrency, budget)
    _log.info(
        "worker pool",
        extra={
            "pool_size": size,
            "concurrency": concurrency,
            "max_connections": budget.max_connections,
        },
    )
    return await create_pool(
        url,
        application_name=application_name,
        min_size=min(settings.db_pool_min_size, size),
        max_size=size,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
