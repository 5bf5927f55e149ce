"""Waiting on an event a test cannot be told about directly: a row appearing, a state reached.

The deadline is a safety net for a broken build, never the thing under test: a test that needs
it to pass is failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

import asyncpg

from llm_service.db.pool import tenant_transaction

T = TypeVar("T")

SAFETY_NET_S = 60.0
_POLL_S = 0.02


async def wait_until(
    condition: Callable[[], Awaitable[T]], what: str, *, timeout: float = SAFETY_NET_S
) -> T:
    """Poll `condition` until it returns a truthy value, and return that value.

    Fails with `what` in the message if the safety-net deadline passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout:.0f} s: {what}")
        await asyncio.sleep(_POLL_S)  # a polling interval, not a synchronisation delay


def wait_until_sync(condition: Callable[[], T], what: str, *, timeout: float = SAFETY_NET_S) -> T:
    """`wait_until` for blocking code (another process, a browser page)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout:.0f} s: {what}")
        time.sleep(_POLL_S)  # a polling interval, not a synchronisation delay


async def wait_for_lease_end(pool: asyncpg.Pool, tenant_id: UUID, call_id: UUID) -> None:
    """Until a ledger row's reservation lease is over on the database's clock (what sweeps read)."""

    async def over() -> bool:
        async with tenant_transaction(pool, tenant_id) as conn:
            ended = await conn.fetchval(
                "SELECT reservation_expires_at <= clock_timestamp() FROM llm_api_calls "
                "WHERE id = $1",
                call_id,
            )
        return bool(ended)

    await wait_until(over, f"the reservation of call {call_id} expired")
