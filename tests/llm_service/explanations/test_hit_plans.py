"""The hit statements keep one plan, and the shapes they are built for read every element.

PostgreSQL plans a prepared statement for its parameters five times, then keeps a generic plan
only if that plan's estimated cost is no worse. Arrays passed as parameters are estimated at
ten elements each, so the fingerprint's generic plan looked ~100x dearer than it is and every
cached hit was planned afresh (more PostgreSQL CPU than running it). These tests read
`pg_prepared_statements` on the connection that ran the statements, as llm_app.
"""

from __future__ import annotations

from datetime import date
from uuid import uuid4

import asyncpg

from llm_service.analytics.fingerprint_queries import data_fingerprint, fingerprint_args
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.explanations.hit_repository import (
    NEAREST_SQL,
    FastHit,
    hit_in_one_statement,
    nearest_in_one_statement,
)
from llm_service.tenants.keys import hash_api_key
from llm_service.tenants.service import CreatedTenant

FIRST = (date(2025, 3, 3), date(2025, 3, 10))
SECOND = (date(2025, 2, 24), date(2025, 3, 3))
# Past PostgreSQL's five custom plans, with room to spare.
EXECUTIONS = 12

PLANS = """
SELECT generic_plans, custom_plans FROM pg_prepared_statements
 WHERE statement LIKE $1 ORDER BY prepare_time
"""


async def _plans(conn: asyncpg.Connection, pattern: str) -> list[tuple[int, int]]:
    return [(r["generic_plans"], r["custom_plans"]) for r in await conn.fetch(PLANS, pattern)]


async def _fresh_pool(database_urls: DatabaseUrls) -> asyncpg.Pool:
    """One new llm_app connection (the service's pool set-up): no statement prepared yet."""
    return await create_pool(database_urls.app, application_name="tests-plans", max_size=1)


async def test_every_shape_of_the_one_statement_keeps_its_generic_plan(
    database_urls: DatabaseUrls, tenant: CreatedTenant
) -> None:
    key = hash_api_key(tenant.api_key)
    shapes = [
        ("channel_performance", [FIRST], None, None),
        ("channel_performance", [FIRST], "facebook_paid", "Why did revenue drop?"),
        ("channel_performance", [FIRST, SECOND], "facebook_paid", None),
        ("top_orders", [FIRST, SECOND], None, "Which orders?"),
        ("unknown_subject_uses_every_part", [FIRST], None, None),
    ]
    pool = await _fresh_pool(database_urls)
    try:
        async with pool.acquire() as conn:
            for subject, periods, channel, question in shapes:
                args = fingerprint_args(subject, periods, channel=channel)
                for _ in range(EXECUTIONS):
                    found = await hit_in_one_statement(conn, key, args, uuid4().hex, question)
                    assert found.tenant == str(tenant.tenant_id) and found.seen_tenant
            plans = await _plans(conn, "%WITH k AS MATERIALIZED%")
    finally:
        await pool.close()
    # Five custom plans to learn the cost, then the generic plan every time; one statement a shape.
    assert all(p == (EXECUTIONS - 5, 5) for p in plans), f"re-planned: {plans}"
    assert len(plans) == len(shapes)


async def test_the_transactional_fingerprint_keeps_its_generic_plan(
    database_urls: DatabaseUrls, tenant: CreatedTenant
) -> None:
    pool = await _fresh_pool(database_urls)
    try:
        async with tenant_transaction(pool, tenant.tenant_id, readonly=True) as conn:
            for _ in range(EXECUTIONS):
                await data_fingerprint(conn, "channel_performance", *FIRST, comparison=SECOND)
            plans = await _plans(conn, "%FROM data_change_journal%")
    finally:
        await pool.close()
    assert plans == [(EXECUTIONS - 5, 5)]


async def test_the_second_period_and_the_merged_statement_agree_after_a_change(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    # A statement built for fewer elements than the arrays hold would drop the second period:
    # a change in it alone must move both the transactional and the merged fingerprint.
    args = fingerprint_args("channel_performance", [FIRST, SECOND], channel="facebook_paid")
    key = hash_api_key(tenant.api_key)

    async def both() -> tuple[str, str]:
        async with tenant_transaction(app_pool, tenant.tenant_id, readonly=True) as conn:
            alone = await data_fingerprint(
                conn, "channel_performance", *FIRST, channel="facebook_paid", comparison=SECOND
            )
        async with app_pool.acquire() as conn:
            merged = await hit_in_one_statement(conn, key, args, uuid4().hex, None)
        return alone, merged.fingerprint

    before = await both()
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute(
            """
            INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type,
                                            channel, revenue_cents, idempotency_key)
            VALUES ($1, '2025-02-25 12:00+00', '2025-02-25 12:00+00', 'purchase',
                    'facebook_paid', 1234, $2)
            """,
            tenant.tenant_id,
            uuid4().hex,
        )
    after = await both()
    assert before[0] == before[1] and after[0] == after[1]
    assert after[0] != before[0], "a change in the second period left the fingerprint as it was"


async def test_the_paraphrase_statement_keeps_its_generic_plan(
    database_urls: DatabaseUrls, tenant: CreatedTenant
) -> None:
    key = hash_api_key(tenant.api_key)
    first = FastHit(str(tenant.tenant_id), "0" * 64, True, None)
    pool = await _fresh_pool(database_urls)
    try:
        async with pool.acquire() as conn:
            for _ in range(EXECUTIONS):
                tenant_now, _ = await nearest_in_one_statement(
                    conn, key, first, uuid4().hex, "m", [1.0, 0.0], "Why did revenue fall?"
                )
                assert tenant_now == str(tenant.tenant_id)
            plans = await _plans(conn, "%<=> $7::real[]::vector%")
    finally:
        await pool.close()
    assert plans == [(EXECUTIONS - 5, 5)], f"re-planned: {plans}"


async def test_the_paraphrase_statement_never_scans_the_approximate_index(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    # HNSW with a selective filter returns a handful of rows or none: the scope's rows must be
    # read and every distance computed exactly, as LOOKUP_SIMILAR_SQL does.
    vector = [0.0] * 384
    async with app_pool.acquire() as conn:
        rows = await conn.fetch(
            "EXPLAIN (COSTS OFF) " + NEAREST_SQL,
            hash_api_key(tenant.api_key),
            str(tenant.tenant_id),
            uuid4().hex,
            "local/all-MiniLM-L6-v2-int8",
            "0" * 64,
            len(vector),
            vector,
        )
    plan = "\n".join(str(r[0]) for r in rows)
    assert "explanation_cache" in plan  # the scope's rows, read
    assert "embedding_local" not in plan and "hnsw" not in plan.lower(), plan
