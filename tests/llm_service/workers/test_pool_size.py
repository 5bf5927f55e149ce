"""The worker's pool: one connection per run in flight, never more than the server allows."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest
from pydantic import ValidationError

from llm_service.db.urls import DatabaseUrls
from llm_service.settings import Settings
from llm_service.workers.pool_size import (
    EXTRA,
    HEADROOM,
    OWN_CONNECTIONS,
    ConnectionBudget,
    create_worker_pool,
    read_budget,
    worker_pool_size,
)

ROOMY = ConnectionBudget(max_connections=500, reserved=3, in_use=7)


def test_by_default_one_connection_per_run_in_flight() -> None:
    assert worker_pool_size(None, 50, ROOMY) == 50 + EXTRA
    assert worker_pool_size(None, 1, ROOMY) == 1 + EXTRA


def test_the_pool_counts_the_sweeper_but_not_the_claim_loop_or_the_lease_keeper() -> None:
    # Only the sweeper draws from the pool beside the runs; the claim loop and the lease keeper
    # have connections of their own (test_worker.py: claims go on while the pool is exhausted).
    assert EXTRA == 1
    assert OWN_CONNECTIONS == 2
    assert worker_pool_size(None, 50, ROOMY) == 51


def test_a_requested_size_is_kept_when_the_server_has_room() -> None:
    assert worker_pool_size(30, 200, ROOMY) == 30


def test_the_server_limit_wins_over_the_concurrency_and_the_setting() -> None:
    budget = ConnectionBudget(max_connections=100, reserved=3, in_use=20)
    left = 100 - 3 - 20 - HEADROOM - OWN_CONNECTIONS
    assert worker_pool_size(None, 1000, budget) == left
    assert worker_pool_size(10_000, 5, budget) == left


def test_a_full_server_still_gives_one_connection() -> None:
    full = ConnectionBudget(max_connections=100, reserved=3, in_use=100)
    assert worker_pool_size(None, 1000, full) == 1


def test_the_setting_refuses_a_pool_of_nothing() -> None:
    with pytest.raises(ValidationError):
        Settings(worker_pool_size=0)


async def test_the_budget_as_the_application_role_sees_every_client(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, database_urls: DatabaseUrls
) -> None:
    async with owner_pool.acquire() as conn:
        max_connections = int(await conn.fetchval("SHOW max_connections"))
    async with app_pool.acquire() as conn:
        before = await read_budget(conn)
    assert before.max_connections == max_connections
    assert before.reserved >= 3
    # Three more sessions of ANOTHER role (the owner): counted too.
    others = [await asyncpg.connect(database_urls.owner) for _ in range(3)]
    try:
        async with app_pool.acquire() as conn:
            after = await read_budget(conn)
    finally:
        for other in others:
            await other.close()
    assert after.in_use >= before.in_use + 3


async def test_a_pool_wider_than_the_server_is_clamped_and_every_connection_opens(
    test_settings: Settings, database_urls: DatabaseUrls
) -> None:
    # WORKER_POOL_SIZE far above max_connections: the pool must not fail at its peak with
    # "too many clients" (every connection of it open at once, here).
    settings = test_settings.model_copy(update={"worker_pool_size": 10_000})
    pool = await create_worker_pool(
        database_urls.app, settings, 1000, application_name="test-pool-size"
    )
    try:
        size = pool.get_max_size()
        assert 1 <= size < 10_000
        async with contextlib.AsyncExitStack() as stack:
            conns = await asyncio.gather(
                *(stack.enter_async_context(pool.acquire()) for _ in range(size))
            )
            assert len({id(c) for c in conns}) == size
            budget = await read_budget(conns[0])
        # With all of them open, the server still has room for the worker's own claim and
        # heartbeat connections and its headroom for everyone else.
        free = budget.max_connections - budget.reserved - budget.in_use
        assert free >= HEADROOM + OWN_CONNECTIONS
    finally:
        await pool.close()


async def test_the_default_pool_follows_the_concurrency(
    test_settings: Settings, database_urls: DatabaseUrls
) -> None:
    assert test_settings.worker_pool_size is None
    pool = await create_worker_pool(
        database_urls.app, test_settings, 5, application_name="test-pool-size"
    )
    try:
        assert pool.get_max_size() == 5 + EXTRA
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == "llm_app"
    finally:
        await pool.close()
