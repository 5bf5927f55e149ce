"""Single flight: concurrent misses of the same scope make one model call, across processes too.

Two layers share one key (the tenant plus `CacheScope.flight_key(fingerprint)`):

- In a process, the first caller becomes the local leader and registers an `asyncio.Event`;
  the others wait on it without touching the database.
- Across processes, the local leader holds the host's lock (`FlightLocks`) on a 64-bit hash of
  the key for as long as it computes; leaders of other processes wait for that lock, until the
  deadline. llm_service's is a transaction-level PostgreSQL advisory lock in a transaction kept
  open meanwhile (so it holds behind PgBouncer in transaction mode too):
  `llm_service.explanations.flight_lock_repository.PgFlightLocks`.

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

The lock is held during `compute` (llm_service's holds a pool connection meanwhile: give it a pool
that `compute` does not draw from). It is released when `compute` ends, fails or is cancelled,
and a crashed leader's lock ends with its connection, so none is ever left held.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar
from uuid import UUID

T = TypeVar("T")

_LOCK_NAMESPACE = "explanation-cache-flight"


class SingleFlightTimeout(TimeoutError):
    """Waiting for another caller's computation of the same key took longer than allowed."""


class FlightLocks(Protocol):
    """The host's cross-process lock of a flight (llm_service: a PostgreSQL advisory lock)."""

    def hold(self, lock_key: int, deadline: float) -> AbstractAsyncContextManager[None]:
        """Hold the lock of `lock_key` until exit; SingleFlightTimeout if it is not taken by
        `deadline` (the running loop's time). Released on exit, an error or a cancellation."""
        ...


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
        locks: FlightLocks,
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
                return await self._lead(locks, flight, lookup, compute, deadline)
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
        locks: FlightLocks,
        flight: tuple[str, str],
        lookup: Callable[[], Awaitable[T | None]],
        compute: Callable[[], Awaitable[T]],
        deadline: float,
    ) -> tuple[T, bool]:
        """Lead the flight in this process: take the cross-process lock, look again, compute."""
        done = asyncio.Event()
        self._flights[flight] = done
        try:
            async with locks.hold(advisory_lock_key(*flight), deadline):
                # Another process may have stored the answer while we waited (or just before).
                value = await lookup()
                if value is not None:
                    return value, False
                return await compute(), True
        finally:
            if self._flights.get(flight) is done:
                del self._flights[flight]
            done.set()


_DEFAULT = SingleFlight()


async def get_or_compute(
    locks: FlightLocks,
    tenant_id: UUID | str,
    key: str,
    lookup: Callable[[], Awaitable[T | None]],
    compute: Callable[[], Awaitable[T]],
    *,
    wait_timeout_s: float,
) -> tuple[T, bool]:
    """`SingleFlight.get_or_compute` on the process-wide registry."""
    return await _DEFAULT.get_or_compute(
        locks, tenant_id, key, lookup, compute, wait_timeout_s=wait_timeout_s
    )
