"""Single flight: concurrent misses of the same scope make one model call, across processes too.

Two layers share one key (the tenant plus `CacheScope.flight_key(fingerprint)`):

- In a process, the first caller becomes the local leader and registers an `asyncio.Event`;
  the others wait on it without touching the database.
- Across processes, the local leader takes a transaction-level PostgreSQL advisory lock on a
  64-bit hash of the key, in a transaction it keeps open for as long as it computes (so the lock
  holds behind PgBouncer in transaction mode too). Leaders of other processes wait for that lock
  (bounded by `SET LOCAL lock_timeout`).

Whoever waited re-runs `lookup` once the leader is done: the leader's `compute` stores its result
before returning, so the waiters find it. The key is the SCOPE, not the question, so paraphrases
coalesce as well: `lookup` does the similarity match. A waiter whose question is not similar
enough to the leader's misses again and becomes the next leader (or waits for the next one): it
computes its own answer, one at a time per scope, and identical questions among the waiters
still share that one call. The price is that different questions about the same scope and data
at the same moment are computed one after another.

`compute` must make its result visible to `lookup` (commit it) before it returns. An exception
from `compute` reaches only its own caller; the waiters then find nothing and one of them
computes. `wait_timeout_s` bounds the time spent waiting for other callers (in this process,
for a pool connection and for the lock), counted from the call; a caller's own `compute` is not
bounded here. When it runs out, `SingleFlightTimeout` is raised.

The lock connection comes from `pool` and is held during `compute`: give it a pool that `compute`
does not draw from (or one large enough for both), or a busy process can starve its own compute.
The lock ends with its transaction, rolled back after `compute` (or on an error or a
cancellation), or ended by the server if the connection dies, so a cancelled or crashed leader
never leaves it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

import asyncpg

from cache import single_flight_queries as queries

T = TypeVar("T")

_LOCK_NAMESPACE = "explanation-cache-flight"
# The least time given to acquiring a pool connection, even when the wait budget is spent.
_MIN_ACQUIRE_S = 0.1


class SingleFlightTimeout(TimeoutError):
    """Waiting for another caller's computation of the same key took longer than allowed."""


def advisory_lock_key(tenant_id: UUID | str, key: str) -> int:
    """The signed 64-bit advisory lock id of a flight (a collision only makes a caller wait)."""
    tenant = str(UUID(str(tenant_id)))
    digest = hashlib.sha256(f"{_LOCK_NAMESPACE}\x1f{tenant}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SingleFlight:
    """The in-process registry of flights; one per process (see `get_or_compute`)."""

    def __init__(self) -> None:
        """No flights yet."""
        self._flights: dict[tuple[str, str], asyncio.Event] = {}

    @property
    def in_flight(self) -> int:
        """How many keys this process is computing now."""
        return len(self._flights)

    async def get_or_compute(
        self,
        pool: asyncpg.Pool,
        tenant_id: UUID | str,
        key: str,
        lookup: Callable[[], Awaitable[T | None]],
        compute: Callable[[], Awaitable[T]],
        *,
        wait_timeout_s: float,
    ) -> tuple[T, bool]:
        """`lookup()`'s value, else `compute()`'s made once per key; and whether we computed it."""
        if not wait_timeout_s > 0:
            raise ValueError("wait_timeout_s must be positive")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_timeout_s
        flight = (str(UUID(str(tenant_id))), key)  # one spelling in every process
        value = await lookup()
        if value is not None:
            return value, False
        while True:
            event = self._flights.get(flight)
            if event is None:
                return await self._lead(pool, flight, lookup, compute, deadline)
            try:
                await asyncio.wait_for(event.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise SingleFlightTimeout(
                    f"waited {wait_timeout_s:g}s for another request of this process to "
                    "compute the same explanation"
                ) from None
            value = await lookup()
            if value is not None:
                return value, False

    async def _lead(
        self,
        pool: asyncpg.Pool,
        flight: tuple[str, str],
        lookup: Callable[[], Awaitable[T | None]],
        compute: Callable[[], Awaitable[T]],
        deadline: float,
    ) -> tuple[T, bool]:
        """Lead the flight in this process: take the database lock, look again, compute."""
        done = asyncio.Event()
        self._flights[flight] = done
        try:
            loop = asyncio.get_running_loop()
            try:
                conn = await pool.acquire(timeout=max(_MIN_ACQUIRE_S, deadline - loop.time()))
            except TimeoutError:
                raise SingleFlightTimeout(
                    "no database connection was free for the single-flight lock in time"
                ) from None
            # The lock lives as long as this transaction, which writes nothing: it always ends in
            # a rollback, whose failure (a dead connection) must not replace the computed answer.
            transaction = conn.transaction()
            try:
                await transaction.start()
                await _lock(conn, advisory_lock_key(*flight), deadline)
                # Another process may have stored the answer while we waited (or just before).
                value = await lookup()
                if value is not None:
                    return value, False
                return await compute(), True
            finally:
                with contextlib.suppress(Exception):
                    await transaction.rollback()
                await pool.release(conn)
        finally:
            if self._flights.get(flight) is done:
                del self._flights[flight]
            done.set()


async def _lock(conn: asyncpg.Connection, lock_key: int, deadline: float) -> None:
    """Take the transaction's advisory lock, waiting at most until `deadline` (loop time)."""
    if await conn.fetchval(queries.TRY_LOCK, lock_key):
        return
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise SingleFlightTimeout("another process is computing the same explanation")
    ms = max(1, math.ceil(remaining * 1000))
    try:
        # A savepoint: a lock timeout rolls back to it, not the whole transaction.
        async with conn.transaction():
            await conn.execute(queries.SET_TIMEOUTS, f"{ms}ms", f"{ms + 5000}ms")
            await conn.execute(queries.LOCK, lock_key, timeout=remaining + 5.0)
    except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError, TimeoutError) as exc:
        raise SingleFlightTimeout(
            f"another process has been computing the same explanation for longer than the "
            f"{remaining:.3g}s left to wait"
        ) from exc


_DEFAULT = SingleFlight()


async def get_or_compute(
    pool: asyncpg.Pool,
    tenant_id: UUID | str,
    key: str,
    lookup: Callable[[], Awaitable[T | None]],
    compute: Callable[[], Awaitable[T]],
    *,
    wait_timeout_s: float,
) -> tuple[T, bool]:
    """`SingleFlight.get_or_compute` on the process-wide registry."""
    return await _DEFAULT.get_or_compute(
        pool, tenant_id, key, lookup, compute, wait_timeout_s=wait_timeout_s
    )
