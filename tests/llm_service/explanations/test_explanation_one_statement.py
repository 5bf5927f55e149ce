"""The one-statement hit attacked, as llm_app: the tenant is set in the statement that reads.

No transaction block: the key's tenant is set by `set_config(..., true)` inside the statement
that also reads the journal and the cache. These tests try to make it read another tenant's
entry or data, keep a tenant on the pooled connection, or compute a fingerprint over no data.
"""

from __future__ import annotations

from datetime import date
from uuid import UUID, uuid4

import asyncpg
import pytest

from cache.scope import CacheScope
from cache.store import CacheHit
from llm_service.analytics.fingerprint_queries import data_fingerprint, fingerprint_args
from llm_service.db.pool import tenant_transaction
from llm_service.explanations import cache_repository as store
from llm_service.explanations.hit_repository import (
    FastHit,
    hit_in_one_statement,
    nearest_in_one_statement,
)
from llm_service.tenants.keys import hash_api_key, new_api_key
from llm_service.tenants.service import CreatedTenant

SUBJECT = "channel_performance"
PERIOD = (date(2025, 3, 3), date(2025, 3, 10))
QUESTION = "Why did revenue drop?"
PARAPHRASE = "Why did revenue fall?"  # cache.question_match accepts it for QUESTION
VECTOR = [1.0, 0.0, 0.0]


def _scope(tenant_id: UUID) -> CacheScope:
    return CacheScope(
        tenant_id=tenant_id,
        subject=SUBJECT,
        params={"period": {"start": "2025-03-03", "end": "2025-03-10"}, "n": uuid4().hex},
        model="openai/gpt-4o-mini",
        prompt_version="test",
    )


async def _fingerprint(pool: asyncpg.Pool, tenant_id: UUID) -> str:
    async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
        return await data_fingerprint(conn, SUBJECT, *PERIOD)


async def _store(
    pool: asyncpg.Pool, scope: CacheScope, fingerprint: str, question: str | None = None
) -> UUID:
    async with tenant_transaction(pool, scope.tenant_id) as conn:
        return await store.store(
            conn,
            scope,
            question=question,
            question_embedding=VECTOR if question else None,
            embedding_model="test-embedder",
            fingerprint=fingerprint,
            explanation={"summary": f"for {scope.tenant_id}", "drivers": [], "confidence": "low"},
            citations=[],
            cost_cents=1,
            ttl_seconds=600,
        )


async def _hit(
    pool: asyncpg.Pool, key: str, scope: CacheScope, question: str | None = None
) -> FastHit:
    async with pool.acquire() as conn:
        return await hit_in_one_statement(
            conn,
            hash_api_key(key),
            fingerprint_args(SUBJECT, [PERIOD]),
            scope.scope_key(),
            question,
        )


async def _nearest(
    pool: asyncpg.Pool, key: str, first: FastHit, scope: CacheScope
) -> tuple[str, CacheHit | None]:
    """The paraphrase's second statement, with the vector every stored question here has."""
    async with pool.acquire() as conn:
        return await nearest_in_one_statement(
            conn, hash_api_key(key), first, scope.scope_key(), "test-embedder", VECTOR, PARAPHRASE
        )


async def test_a_key_never_reads_another_tenants_entry(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    scope = _scope(other_tenant.tenant_id)
    # Both tenants have no data in the period: equal fingerprints, so only the tenant differs.
    fp = await _fingerprint(app_pool, other_tenant.tenant_id)
    assert fp == await _fingerprint(app_pool, tenant.tenant_id)
    plain = await _store(app_pool, scope, fp)
    asked = await _store(app_pool, scope, fp, QUESTION)

    for question in (None, QUESTION):
        foreign = await _hit(app_pool, tenant.api_key, scope, question)
        assert foreign.tenant == str(tenant.tenant_id)
        assert foreign.hit is None, "a key read another tenant's cached answer"
        own = await _hit(app_pool, other_tenant.api_key, scope, question)
        assert own.hit is not None and own.seen_tenant
        assert own.hit.entry_id == (asked if question else plain)
        assert own.hit.tenant_id == other_tenant.tenant_id
        assert own.fingerprint == fp


async def test_an_unknown_or_revoked_key_reads_nothing(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    scope = _scope(tenant.tenant_id)
    await _store(app_pool, scope, await _fingerprint(app_pool, tenant.tenant_id))
    assert (await _hit(app_pool, tenant.api_key, scope)).hit is not None
    unknown = await _hit(app_pool, new_api_key(), scope)
    assert (unknown.tenant, unknown.hit) == ("", None)
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute(
            "UPDATE tenants SET api_key_hash = $2 WHERE id = $1",
            tenant.tenant_id,
            hash_api_key(new_api_key()),
        )
    revoked = await _hit(app_pool, tenant.api_key, scope)
    assert (revoked.tenant, revoked.hit) == ("", None)


async def test_the_tenant_does_not_outlive_the_statement(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    scope = _scope(tenant.tenant_id)
    await _store(app_pool, scope, await _fingerprint(app_pool, tenant.tenant_id))
    async with app_pool.acquire() as conn:
        found = await hit_in_one_statement(
            conn,
            hash_api_key(tenant.api_key),
            fingerprint_args(SUBJECT, [PERIOD]),
            scope.scope_key(),
            None,
        )
        assert found.hit is not None
        # The next statement on this (pooled, never reset) connection sees no tenant at all.
        assert await conn.fetchval("SELECT current_setting('app.current_tenant_id', true)") in (
            "",
            None,
        )
        assert await conn.fetchval("SELECT count(*) FROM explanation_cache") == 0


async def test_it_refuses_to_run_inside_a_transaction_block(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(RuntimeError, match="outside a transaction"):
            await hit_in_one_statement(
                conn,
                hash_api_key(tenant.api_key),
                fingerprint_args(SUBJECT, [PERIOD]),
                "0" * 64,
                None,
            )


async def test_the_fingerprint_rests_on_the_keys_tenants_data(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    # Data in the period for one tenant only: each key's fingerprint must be over its own rows
    # (the statement must read the journal AFTER it set the tenant, not over no rows at all).
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute(
            """
            INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type,
                                            channel, revenue_cents, idempotency_key)
            VALUES ($1, '2025-03-05 12:00+00', '2025-03-05 12:00+00', 'purchase',
                    'facebook_paid', 1234, $2)
            """,
            tenant.tenant_id,
            uuid4().hex,
        )
    with_data = await _fingerprint(app_pool, tenant.tenant_id)
    without = await _fingerprint(app_pool, other_tenant.tenant_id)
    assert with_data != without
    scope = _scope(tenant.tenant_id)
    mine = await _hit(app_pool, tenant.api_key, scope)
    theirs = await _hit(app_pool, other_tenant.api_key, scope)
    assert (mine.fingerprint, mine.seen_tenant) == (with_data, True)
    assert (theirs.fingerprint, theirs.seen_tenant) == (without, True)


async def test_a_paraphrase_compares_its_vector_only_for_the_tenant_it_was_taken_for(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    # Equal scopes, fingerprints, questions and vectors in both tenants: only the tenant differs.
    scope = _scope(tenant.tenant_id)
    fp = await _fingerprint(app_pool, tenant.tenant_id)
    assert fp == await _fingerprint(app_pool, other_tenant.tenant_id)
    mine = await _store(app_pool, scope, fp, QUESTION)
    theirs = await _store(
        app_pool, scope.model_copy(update={"tenant_id": other_tenant.tenant_id}), fp, QUESTION
    )
    first = await _hit(app_pool, tenant.api_key, scope, PARAPHRASE)
    assert first.hit is None and first.tenant == str(tenant.tenant_id)  # not the same question
    tenant_now, own = await _nearest(app_pool, tenant.api_key, first, scope)
    assert tenant_now == str(tenant.tenant_id)
    assert own is not None and (own.entry_id, own.match_relation) == (mine, "paraphrase")
    # The other tenant's key with the first statement's result of this key (a vector taken for
    # another tenant): compared with nothing at all, although its own entry would match.
    tenant_now, foreign = await _nearest(app_pool, other_tenant.api_key, first, scope)
    assert tenant_now == str(other_tenant.tenant_id)
    assert foreign is None, "a vector was compared under a tenant it was not taken for"
    theirs_first = await _hit(app_pool, other_tenant.api_key, scope, PARAPHRASE)
    _, own_theirs = await _nearest(app_pool, other_tenant.api_key, theirs_first, scope)
    assert own_theirs is not None and own_theirs.entry_id == theirs != mine
    # An unknown key (or one revoked between the two statements) reads nothing.
    assert await _nearest(app_pool, new_api_key(), first, scope) == ("", None)


async def test_the_paraphrase_statement_refuses_a_transaction_block(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    first = FastHit(str(tenant.tenant_id), "0" * 64, True, None)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(RuntimeError, match="outside a transaction"):
            await nearest_in_one_statement(
                conn, hash_api_key(tenant.api_key), first, "0" * 64, "m", VECTOR, PARAPHRASE
            )
