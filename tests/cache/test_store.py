"""The cache store against the real database, as the application role under row-level security."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from cache.embedding_local import MODEL_ID, LocalEmbedder
from cache.hits import HitCounter
from cache.scope import CacheScope, normalise_question
from cache.store import CacheHit
from llm_service.db.pool import tenant_transaction, transaction
from llm_service.explanations import cache_repository as store
from llm_service.explanations.cache_repository import CacheTransactions
from llm_service.tenants.service import CreatedTenant, create_tenant
from tests.helpers.waiting import wait_until

FP = "fingerprint-1"
EXPLANATION: dict[str, Any] = {
    "summary": "Paid social revenue fell 12% week over week.",
    "drivers": [{"campaign": "Autumn retargeting", "share": Decimal("0.6250")}],
}
CITATIONS = [{"query": "channel_performance", "rows": 7}]
OTHER_384_MODEL = "test/other-minilm-384"
MODEL_1536 = "openai/text-embedding-3-small"

ScopeFactory = Callable[..., CacheScope]
VectorFactory = Callable[..., list[float]]


def embed(embedder: LocalEmbedder, question: str) -> list[float]:
    return embedder.embed_one(normalise_question(question))


async def put(
    pool: asyncpg.Pool,
    scope: CacheScope,
    question: str | None,
    vector: list[float] | None,
    *,
    model: str = MODEL_ID,
    fingerprint: str = FP,
    ttl: float = 3600,
    explanation: dict[str, Any] | None = None,
) -> uuid.UUID:
    async with tenant_transaction(pool, scope.tenant_id) as conn:
        return await store.store(
            conn,
            scope,
            question=question,
            question_embedding=vector,
            embedding_model=model,
            fingerprint=fingerprint,
            explanation=explanation or EXPLANATION,
            citations=CITATIONS,
            cost_cents=Decimal("0.0123456789"),
            ttl_seconds=ttl,
        )


async def get(
    pool: asyncpg.Pool,
    scope: CacheScope,
    question: str | None,
    vector: list[float] | None,
    *,
    model: str = MODEL_ID,
    fingerprint: str = FP,
    as_tenant: uuid.UUID | None = None,
) -> CacheHit | None:
    async with tenant_transaction(pool, as_tenant or scope.tenant_id, readonly=True) as conn:
        return await store.lookup(
            conn,
            scope,
            fingerprint=fingerprint,
            question=question,
            question_embedding=vector,
            embedding_model=model,
        )


async def expire(pool: asyncpg.Pool, tenant_id: uuid.UUID, *entry_ids: uuid.UUID) -> None:
    async with tenant_transaction(pool, tenant_id) as conn:
        await conn.execute(
            "UPDATE explanation_cache SET expires_at = now() - interval '1 second' "
            "WHERE id = ANY($1::uuid[])",
            list(entry_ids),
        )


async def test_miss_then_hit_for_the_same_scope_and_a_paraphrase(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    make_scope: ScopeFactory,
    local_embedder: LocalEmbedder,
) -> None:
    scope = make_scope(tenant.tenant_id)
    question = "What explains the revenue decline?"
    assert await get(app_pool, scope, question, embed(local_embedder, question)) is None
    entry_id = await put(app_pool, scope, question, embed(local_embedder, question))

    same = await get(app_pool, scope, question, embed(local_embedder, question))
    assert same is not None and same.entry_id == entry_id
    assert same.similarity == pytest.approx(1.0, abs=1e-5)

    assert same.match_relation == "exact"

    paraphrase = "What explains the decline in revenue?"
    hit = await get(app_pool, scope, paraphrase, embed(local_embedder, paraphrase))
    assert hit is not None and hit.entry_id == entry_id
    assert hit.similarity < 1.0
    assert hit.match_relation == "paraphrase"
    assert hit.agreement is not None and hit.agreement["measures"] == ["revenue"]
    assert hit.explanation == EXPLANATION  # Decimals come back exact
    assert hit.citations == CITATIONS
    assert hit.question == question
    assert hit.tenant_id == tenant.tenant_id
    assert hit.cost_cents == Decimal("0.0123456789")
    assert (hit.model, hit.prompt_version, hit.embedding_model) == (
        "openai/gpt-4o-mini",
        "explain-v1",
        MODEL_ID,
    )


async def test_stored_row_records_the_canonical_scope(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, make_scope: ScopeFactory
) -> None:
    scope = make_scope(tenant.tenant_id)
    entry_id = await put(app_pool, scope, None, None)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT entity_type, scope_key, scope::text AS scope, question, question_embedding, "
            "embedding_dim, expires_at - created_at AS ttl FROM explanation_cache WHERE id = $1",
            entry_id,
        )
    assert row["entity_type"] == "channel_performance"
    assert row["scope_key"] == scope.scope_key()
    assert "tenant" not in row["scope"] and "2026-11-09" in row["scope"]
    assert (row["question"], row["question_embedding"], row["embedding_dim"]) == ("", None, None)
    assert row["ttl"].total_seconds() == pytest.approx(3600, abs=5)


@pytest.mark.parametrize(
    "changes",
    [
        {"params": {"channel": "email"}},
        {"params": {"metric": "conversions"}},
        {"params": {"start": date(2026, 11, 2), "end": date(2026, 11, 8)}},
        {"params": {"comparison": "same_period_last_year"}},
        {"model": "anthropic/claude-haiku"},
        {"prompt_version": "explain-v2"},
    ],
)
async def test_identical_question_in_another_scope_misses(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    make_scope: ScopeFactory,
    local_embedder: LocalEmbedder,
    changes: dict[str, Any],
) -> None:
    question = "Why did revenue drop?"
    vector = embed(local_embedder, question)
    await put(app_pool, make_scope(tenant.tenant_id), question, vector)
    await put(app_pool, make_scope(tenant.tenant_id), None, None)
    other = make_scope(tenant.tenant_id, **changes)
    assert await get(app_pool, other, question, vector) is None
    assert await get(app_pool, other, None, None) is None
    assert await get(app_pool, make_scope(tenant.tenant_id), question, vector) is not None


async def test_other_fingerprint_misses(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, make_scope: ScopeFactory, random_unit: Any
) -> None:
    scope = make_scope(tenant.tenant_id)
    vector = random_unit(seed=1)
    await put(app_pool, scope, "why did revenue drop", vector, fingerprint="data-v1")
    await put(app_pool, scope, None, None, fingerprint="data-v1")
    assert await get(app_pool, scope, "why did revenue drop", vector, fingerprint="data-v2") is None
    assert await get(app_pool, scope, None, None, fingerprint="data-v2") is None
    assert await get(app_pool, scope, "why did revenue drop", vector, fingerprint="data-v1")


async def test_expired_entry_misses(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, make_scope: ScopeFactory, random_unit: Any
) -> None:
    scope = make_scope(tenant.tenant_id)
    vector = random_unit(seed=2)
    with_question = await put(app_pool, scope, "why did revenue drop", vector)
    without = await put(app_pool, scope, None, None)
    assert await get(app_pool, scope, "why did revenue drop", vector) is not None
    await expire(app_pool, tenant.tenant_id, with_question, without)
    assert await get(app_pool, scope, "why did revenue drop", vector) is None
    assert await get(app_pool, scope, None, None) is None


async def test_short_ttl_expires_on_its_own(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, make_scope: ScopeFactory
) -> None:
    scope = make_scope(tenant.tenant_id)
    entry = await put(app_pool, scope, None, None, ttl=2.0)
    assert await get(app_pool, scope, None, None) is not None

    async def past_expiry() -> bool:  # the database's clock, in a fresh transaction each time
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            expired = await conn.fetchval(
                "SELECT clock_timestamp() > expires_at FROM explanation_cache WHERE id = $1", entry
            )
        return bool(expired)

    await wait_until(past_expiry, "the 2 s entry's expiry passed on the database clock")
    assert await get(app_pool, scope, None, None) is None


async def test_another_tenant_never_gets_the_entry(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    make_scope: ScopeFactory,
    local_embedder: LocalEmbedder,
) -> None:
    question = "Why did revenue drop?"
    vector = embed(local_embedder, question)
    scope_a = make_scope(tenant.tenant_id)
    scope_b = make_scope(other_tenant.tenant_id)
    assert scope_a.scope_key() == scope_b.scope_key()
    await put(app_pool, scope_a, question, vector)
    await put(app_pool, scope_a, None, None)

    # B asks the identical question about the identical scope: nothing.
    assert await get(app_pool, scope_b, question, vector) is None
    assert await get(app_pool, scope_b, None, None) is None
    # Even naming A's tenant in the scope, B's transaction sees none of A's rows (RLS).
    assert await get(app_pool, scope_a, question, vector, as_tenant=other_tenant.tenant_id) is None
    assert await get(app_pool, scope_a, None, None, as_tenant=other_tenant.tenant_id) is None
    # No tenant set at all: fail closed.
    async with app_pool.acquire() as conn:
        assert (
            await store.lookup(
                conn,
                scope_a,
                fingerprint=FP,
                question=question,
                question_embedding=vector,
                embedding_model=MODEL_ID,
            )
            is None
        )
    # A connection that bypasses RLS still only matches the tenant named in the scope.
    async with owner_pool.acquire() as conn:
        bypass = await conn.fetchval(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        if bypass:
            hit = await store.lookup(
                conn,
                scope_b,
                fingerprint=FP,
                question=question,
                question_embedding=vector,
                embedding_model=MODEL_ID,
            )
            assert hit is None
    # A still gets its own.
    assert await get(app_pool, scope_a, question, vector) is not None


async def test_requests_without_free_text_match_only_entries_without_free_text(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, make_scope: ScopeFactory, random_unit: Any
) -> None:
    scope = make_scope(tenant.tenant_id)
    vector = random_unit(seed=3)
    with_question = await put(app_pool, scope, "why did revenue drop", vector)
    assert await get(app_pool, scope, None, None) is None
    assert await get(app_pool, scope, "", None) is None
    assert await get(app_pool, scope, "   ", None) is None
    without = await put(app_pool, scope, None, None)
    hit = await get(app_pool, scope, None, None)
    assert hit is not None and hit.entry_id == without and hit.question == ""
    hit = await get(app_pool, scope, "why did revenue drop", vector)
    assert hit is not None and hit.entry_id == with_question
    # The no-question entry does not depend on the embedding model.
    assert await get(app_pool, scope, None, None, model=MODEL_1536) is not None


async def test_a_reversed_question_misses_despite_high_similarity(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    make_scope: ScopeFactory,
    local_embedder: LocalEmbedder,
) -> None:
    scope = make_scope(tenant.tenant_id)
    stored = "Which channel contributed most to the decline?"
    await put(app_pool, scope, stored, embed(local_embedder, stored))
    reversed_question = "Which channel contributed least to the decline?"
    vector = embed(local_embedder, reversed_question)
    similarity = sum(a * b for a, b in zip(vector, embed(local_embedder, stored), strict=True))
    assert similarity > 0.95
    assert await get(app_pool, scope, reversed_question, vector) is None


async def test_the_exact_question_hits_without_a_vector(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    make_scope: ScopeFactory,
    local_embedder: LocalEmbedder,
) -> None:
    scope = make_scope(tenant.tenant_id)
    stored = "¿Por qué bajaron las ventas?"
    entry_id = await put(app_pool, scope, stored, embed(local_embedder, stored))
    hit = await get(app_pool, scope, "  ¿por qué   bajaron las ventas ", None)
    assert hit is not None and hit.entry_id == entry_id and hit.match_relation == "exact"
    # Another language is read by no analyser: its reversal misses even with its vector.
    reversal = "¿Por qué subieron las ventas?"
    assert await get(app_pool, scope, reversal, embed(local_embedder, reversal)) is None


async def test_the_matcher_falls_through_to_the_next_nearest_entry(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    make_scope: ScopeFactory,
    local_embedder: LocalEmbedder,
) -> None:
    scope = make_scope(tenant.tenant_id)
    flip = "Why did revenue not drop so much?"
    right = "Why did our revenue drop so much?"
    await put(app_pool, scope, flip, embed(local_embedder, flip))
    right_id = await put(app_pool, scope, right, embed(local_embedder, right))
    question = "why did revenue drop so much"
    hit = await get(app_pool, scope, question, embed(local_embedder, question))
    assert hit is not None and hit.entry_id == right_id


async def test_vectors_of_another_model_are_never_compared(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, make_scope: ScopeFactory, random_unit: Any
) -> None:
    scope = make_scope(tenant.tenant_id)
    vector = random_unit(seed=4)
    other_id = await put(app_pool, scope, "why did revenue drop", vector, model=OTHER_384_MODEL)
    # A paraphrase, same 384 dimensions, the identical vector: a different model id never matches.
    assert await get(app_pool, scope, "why did revenue decline", vector) is None
    hit = await get(app_pool, scope, "why did revenue decline", vector, model=OTHER_384_MODEL)
    assert hit is not None and hit.entry_id == other_id
    # The very same question needs no vector at all, so it is found whatever the model.
    same = await get(app_pool, scope, "Why did revenue drop?", None)
    assert same is not None and same.entry_id == other_id and same.match_relation == "exact"


async def test_models_of_other_dimensions_live_side_by_side(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, make_scope: ScopeFactory, random_unit: Any
) -> None:
    scope = make_scope(tenant.tenant_id)
    small, large = random_unit(384, seed=5), random_unit(1536, seed=6)
    small_id = await put(app_pool, scope, "why did revenue drop", small)
    large_id = await put(app_pool, scope, "why did revenue drop", large, model=MODEL_1536)
    # A paraphrase (the exact text would need no vector): found through each model's vectors.
    hit = await get(app_pool, scope, "why did revenue decline", small)
    assert hit is not None and hit.entry_id == small_id
    hit = await get(app_pool, scope, "why did revenue decline", large, model=MODEL_1536)
    assert hit is not None and hit.entry_id == large_id
    # A vector of the wrong length for the model's entries finds nothing (and raises nothing).
    assert await get(app_pool, scope, "why did revenue decline", small, model=MODEL_1536) is None

    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        dims = await conn.fetch(
            "SELECT embedding_model, embedding_dim, vector_dims(question_embedding) AS actual "
            "FROM explanation_cache WHERE id = ANY($1::uuid[]) ORDER BY embedding_dim",
            [small_id, large_id],
        )
    assert [(r["embedding_model"], r["embedding_dim"], r["actual"]) for r in dims] == [
        (MODEL_ID, 384, 384),
        (MODEL_1536, 1536, 1536),
    ]


@pytest.mark.parametrize(
    ("dim", "vector_sql", "question"),
    [
        (384, "array_fill(0.1::real, ARRAY[1536])::vector", "q"),  # dims disagree
        (None, "array_fill(0.1::real, ARRAY[384])::vector", "q"),  # a vector needs its dim
        (384, "NULL", "q"),  # free text needs a vector
        (384, "array_fill(0.1::real, ARRAY[384])::vector", ""),  # a vector needs free text
    ],
)
async def test_schema_keeps_vectors_and_dimensions_consistent(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    make_scope: ScopeFactory,
    dim: int | None,
    vector_sql: str,
    question: str,
) -> None:
    scope = make_scope(tenant.tenant_id)
    with pytest.raises(asyncpg.CheckViolationError):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "INSERT INTO explanation_cache (tenant_id, entity_type, scope_key, scope, "
                "question, question_embedding, embedding_model, embedding_dim, explanation, "
                "model, prompt_version, data_fingerprint, expires_at) VALUES ($1, 'x', $2, "
                f"'{{}}', $3, {vector_sql}, 'test/model', $4, '{{}}', 'm', 'v', 'fp', now())",
                tenant.tenant_id,
                scope.scope_key(),
                question,
                dim,
            )


async def test_arguments_are_validated(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, make_scope: ScopeFactory, random_unit: Any
) -> None:
    scope = make_scope(tenant.tenant_id)
    vector = random_unit(seed=7)
    # A question without its vector is an exact-only lookup (nothing stored: a miss).
    assert await get(app_pool, scope, "a question", None) is None
    with pytest.raises(ValueError, match="free text"):
        await get(app_pool, scope, None, vector)
    with pytest.raises(ValueError, match="free text"):
        await put(app_pool, scope, "  ", vector)
    with pytest.raises(ValueError, match="ttl"):
        await put(app_pool, scope, None, None, ttl=0)


async def test_store_for_another_tenant_is_refused(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    make_scope: ScopeFactory,
) -> None:
    scope_b = make_scope(other_tenant.tenant_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await store.store(
                conn,
                scope_b,
                question=None,
                question_embedding=None,
                embedding_model=MODEL_ID,
                fingerprint=FP,
                explanation=EXPLANATION,
                citations=[],
                cost_cents=0,
                ttl_seconds=60,
            )


async def _hit_counts(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> dict[uuid.UUID, Any]:
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await conn.fetch("SELECT id, cache_hit_count, last_hit_at FROM explanation_cache")
    return {r["id"]: (r["cache_hit_count"], r["last_hit_at"]) for r in rows}


async def test_hit_counter_flushes_per_tenant(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    make_scope: ScopeFactory,
) -> None:
    a1 = await put(app_pool, make_scope(tenant.tenant_id), None, None)
    a2 = await put(app_pool, make_scope(tenant.tenant_id, subject="campaigns"), None, None)
    b1 = await put(app_pool, make_scope(other_tenant.tenant_id), None, None)
    counter = HitCounter()
    for _ in range(3):
        counter.record(tenant.tenant_id, a1)
    counter.record(tenant.tenant_id, a2)
    hit = await get(app_pool, make_scope(other_tenant.tenant_id), None, None)
    assert hit is not None
    counter.record_hit(hit)
    counter.record_hit(hit)
    # Nothing is written on the hit path.
    assert (await _hit_counts(app_pool, tenant.tenant_id))[a1] == (0, None)
    assert counter.pending == 6

    assert await counter.flush(CacheTransactions(app_pool)) == 6
    assert counter.pending == 0
    counts_a = await _hit_counts(app_pool, tenant.tenant_id)
    assert counts_a[a1][0] == 3 and counts_a[a2][0] == 1
    assert counts_a[a1][1] is not None
    assert (await _hit_counts(app_pool, other_tenant.tenant_id))[b1][0] == 2

    counter.record(tenant.tenant_id, a1)
    assert await counter.flush(CacheTransactions(app_pool)) == 1
    assert (await _hit_counts(app_pool, tenant.tenant_id))[a1][0] == 4
    assert await counter.flush(CacheTransactions(app_pool)) == 0


async def test_hit_counts_written_under_another_tenant_touch_nothing(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    make_scope: ScopeFactory,
) -> None:
    # add_hits no longer sets the tenant itself: the host's transaction decides, and a
    # transaction of tenant B cannot count hits on tenant A's entries, even naming A.
    entry = await put(app_pool, make_scope(tenant.tenant_id), None, None)
    hits = {entry: (5, datetime.now(UTC))}
    async with tenant_transaction(app_pool, other_tenant.tenant_id) as conn:
        assert await store.add_hits(conn, tenant.tenant_id, hits) == 0
    async with transaction(app_pool) as conn:  # no tenant at all: fail closed
        assert await store.add_hits(conn, tenant.tenant_id, hits) == 0
    assert (await _hit_counts(app_pool, tenant.tenant_id))[entry][0] == 0


async def test_hit_counter_background_flush_and_shutdown(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, make_scope: ScopeFactory
) -> None:
    entry = await put(app_pool, make_scope(tenant.tenant_id), None, None)
    counter = HitCounter()
    counter.start(CacheTransactions(app_pool), interval_s=0.1)
    counter.record(tenant.tenant_id, entry)

    async def flushed() -> bool:  # no aclose, no flush call: only the background task writes
        return (
            counter.pending == 0 and (await _hit_counts(app_pool, tenant.tenant_id))[entry][0] == 1
        )

    await wait_until(flushed, "the background flush wrote the hit")
    assert (await _hit_counts(app_pool, tenant.tenant_id))[entry][0] == 1
    counter.record(tenant.tenant_id, entry)
    counter.record(tenant.tenant_id, entry)
    await counter.aclose()  # the last flush happens on shutdown
    assert (await _hit_counts(app_pool, tenant.tenant_id))[entry][0] == 3
    assert counter.pending == 0


class _BrokenTenants:
    """A host whose transactions cannot be had."""

    def transaction(self, tenant_id: uuid.UUID) -> Any:
        raise ConnectionError("database unreachable")


async def test_hit_counter_keeps_counts_when_a_flush_fails(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, make_scope: ScopeFactory
) -> None:
    entry = await put(app_pool, make_scope(tenant.tenant_id), None, None)
    counter = HitCounter(max_entries=2)
    counter.record(tenant.tenant_id, entry)
    counter.record(tenant.tenant_id, entry)
    counter.record(tenant.tenant_id, uuid.uuid4())
    counter.record(tenant.tenant_id, uuid.uuid4())  # over the entry limit: dropped
    assert counter.dropped == 1
    with pytest.raises(ConnectionError):
        await counter.flush(_BrokenTenants())
    assert counter.pending == 3
    assert await counter.flush(CacheTransactions(app_pool)) == 3
    assert (await _hit_counts(app_pool, tenant.tenant_id))[entry][0] == 2


async def test_purge_removes_exactly_the_expired_entries(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    make_scope: ScopeFactory,
) -> None:
    live: list[tuple[uuid.UUID, uuid.UUID]] = []
    dead: list[tuple[uuid.UUID, uuid.UUID]] = []
    for tenant_id in (tenant.tenant_id, other_tenant.tenant_id):
        for i in range(5):
            entry = await put(app_pool, make_scope(tenant_id, subject=f"s{i}"), None, None)
            (dead if i % 2 == 0 else live).append((tenant_id, entry))
    for tenant_id, entry in dead:
        await expire(app_pool, tenant_id, entry)
    async with owner_pool.acquire() as conn:
        # Every tenant's expired rows (earlier tests leave some), counted by a role past RLS.
        sees_all = await conn.fetchval(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        expired_before = await conn.fetchval(
            "SELECT count(*) FROM explanation_cache WHERE expires_at <= now()"
        )

    async with app_pool.acquire() as conn:  # no tenant set: the definer function crosses tenants
        purged = await store.purge_expired(conn, batch_size=2)
        assert await store.purge_expired(conn) == 0
    assert purged >= len(dead)
    if sees_all:
        assert purged == expired_before

    for tenant_id in (tenant.tenant_id, other_tenant.tenant_id):
        remaining = set(await _hit_counts(app_pool, tenant_id))
        assert remaining == {e for t, e in live if t == tenant_id}
    with pytest.raises(ValueError):
        async with app_pool.acquire() as conn:
            await store.purge_expired(conn, batch_size=0)


async def test_invalidate_removes_only_that_scope_of_that_tenant(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    make_scope: ScopeFactory,
    random_unit: Any,
) -> None:
    scope = make_scope(tenant.tenant_id)
    await put(app_pool, scope, None, None)
    await put(app_pool, scope, "why did revenue drop", random_unit(seed=8))
    await put(app_pool, scope, None, None, fingerprint="older-data")
    keep = await put(app_pool, make_scope(tenant.tenant_id, subject="campaigns"), None, None)
    theirs = await put(app_pool, make_scope(other_tenant.tenant_id), None, None)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        assert await store.invalidate(conn, scope) == 3
    assert set(await _hit_counts(app_pool, tenant.tenant_id)) == {keep}
    assert set(await _hit_counts(app_pool, other_tenant.tenant_id)) == {theirs}


FILLER_SQL = """
INSERT INTO explanation_cache (tenant_id, entity_type, scope_key, scope, question,
    question_embedding, embedding_model, embedding_dim, explanation, model, prompt_version,
    data_fingerprint, expires_at)
SELECT $1, 'filler', encode(sha256(convert_to($2 || (g % $4)::text, 'UTF8')), 'hex'), '{}',
       'filler question ' || g,
       (SELECT array_agg(random()::real - 0.5) FROM generate_series(1, 384) WHERE g > 0)::vector,
       CASE WHEN g % 4 = 0 THEN $5 ELSE $6 END, 384, '{}', 'm', 'v', 'fp',
       now() + interval '1 day'
  FROM generate_series(1, $3) AS g
"""


async def test_lookup_plan_uses_the_scope_index_on_a_big_table(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    make_scope: ScopeFactory,
    local_embedder: LocalEmbedder,
) -> None:
    tenants = [
        (await create_tenant(owner_pool, f"plan-{i}-{uuid.uuid4().hex[:6]}")).tenant_id
        for i in range(10)
    ]
    for tenant_id in tenants:
        async with tenant_transaction(app_pool, tenant_id) as conn:
            await conn.execute(
                FILLER_SQL, tenant_id, str(tenant_id), 400, 40, MODEL_ID, OTHER_384_MODEL
            )
    target = tenants[0]
    scope = make_scope(target)
    questions = ["Why did revenue drop?", "Which campaign performed best?", "Explain this chart"]
    ids = {q: await put(app_pool, scope, q, embed(local_embedder, q)) for q in questions}
    async with owner_pool.acquire() as conn:
        await conn.execute("ANALYZE explanation_cache")
        total = await conn.fetchval(
            "SELECT reltuples FROM pg_class WHERE relname = $1", "explanation_cache"
        )
    assert total >= 4000

    vector = embed(local_embedder, "why did revenue drop")
    async with tenant_transaction(app_pool, target, readonly=True) as conn:
        plan = await store.explain_lookup(
            conn, scope, fingerprint=FP, question_embedding=vector, embedding_model=MODEL_ID
        )
    assert "idx_explanation_cache_scope" in plan, plan
    assert "Seq Scan on explanation_cache" not in plan, plan
    assert "idx_explanation_cache_embedding_local" not in plan, plan
    # Every entry of the scope was a candidate: exact distances, nothing lost to an ANN search.
    assert re.search(r"CTE Scan on candidates \(actual[^)]* rows=3(\.0+)? ", plan), plan

    hit = await get(app_pool, scope, "why did revenue drop", vector)
    assert hit is not None and hit.entry_id == ids["Why did revenue drop?"]
