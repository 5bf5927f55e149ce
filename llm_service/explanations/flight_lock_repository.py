"""The single flight's cross-process lock (`cache.single_flight.FlightLocks`): an advisory lock.

The lock is transaction-level, taken in a transaction kept open while the leader computes (so it
holds behind PgBouncer in transaction mode too) and always rolled back: it writes nothing. Waiting
for it is bounded by `lock_timeout` (set for the transaction only), so a leader of another process
that computes for too long makes the waiter give up, never wait forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from cache.single_flight import SingleFlightTimeout

TRY_LOCK = "SELECT pg_try_advisory_xact_lock($1)"
LOCK = "SELECT pg_advisory_xact_lock($1)"
SET_TIMEOUTS = (
    "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)"
)
# The least time given to acquiring a pool connection, even when the wait budget is spent.
_MIN_ACQUIRE_S = 0.1


class PgFlightLocks:
    """Flight locks on connections of `pool` (one held per leading flight, for its duration)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        """Locks on connections of `pool`: one that compute does not draw from."""
        self.pool = pool

    @asynccontextmanager
    async def hold(self, lock_key: int, deadline: float) -> AsyncIterator[None]:
        """Hold the advisory lock of `lock_key` until exit (see the module doc)."""
        loop = asyncio.get_running_loop()
        try:
            conn = await self.pool.acquire(timeout=max(_MIN_ACQUIRE_S, deadline - loop.time()))
        except TimeoutError:
            raise SingleFlightTimeout(
                "no database connection was free for the single-flight lock in time"
            ) from None
        # The lock lives as long as this transaction, which writes nothing: it always ends in a
        # rollback, whose failure (a dead connection) must not replace the computed answer.
        transaction = conn.transaction()
        try:
            await transaction.start()
            await _lock(conn, lock_key, deadline)
            yield
        finally:
            with contextlib.suppress(Exception):
                await transaction.rollback()
            await self.pool.release(conn)


async def _lock(conn: asyncpg.Connection, lock_key: int, deadline: float) -> None:
    """Take the transaction's advisory lock, waiting at most until `deadline` (loop time)."""
    if await conn.fetchval(TRY_LOCK, lock_key):
        return
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise SingleFlightTimeout("another process is computing the same explanation")
    ms = max(1, math.ceil(remaining * 1000))
    try:
        # A savepoint: a lock timeout rolls back to it, not the whole transaction.
        async with conn.transaction():
            await conn.execute(SET_TIMEOUTS, f"{ms}ms", f"{ms + 5000}ms")
            await conn.execute(LOCK, lock_key, timeout=remaining + 5.0)
    except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError, TimeoutError) as exc:
        raise SingleFlightTimeout(
            f"another process has been computing the same explanation for longer than the "
            f"{remaining:.3g}s left to wait"
        ) from exc
