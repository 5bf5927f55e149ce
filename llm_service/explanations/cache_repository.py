"""The explanation cache's rows in PostgreSQL: the `cache.rules.CacheRows` llm_service implements.

Every statement about `explanation_cache`: the three lookups, the insert, hit counts, a scope's
invalidation and the purge of expired entries. Values go in and out as text / real[] casts, so
nothing here depends on the connection's jsonb or vector codecs. The connection-first functions
below are the cache's rules (`cache.store`) bound to this store, for callers holding a tenant
transaction; `CacheTransactions` opens such transactions for `cache.hits`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from cache import store as rules
from cache.scope import CacheScope
from cache.store import CacheHit, NewEntry, StoredEntry
from llm_service.db.bind import on_connection
from llm_service.db.pool import tenant_transaction
from llm_service.retention.repository import purge_expired_cache

__all__ = [
    "CacheHit",
    "CacheTransactions",
    "PgCacheRows",
    "add_hits",
    "explain_lookup",
    "invalidate",
    "lookup",
    "purge_expired",
    "store",
]

ROW_COLUMNS = """e.id, e.tenant_id, e.question, e.embedding_model,
       e.explanation::text AS explanation, e.citations::text AS citations, e.model,
       e.prompt_version, e.data_fingerprint, e.cost_cents, e.created_at, e.expires_at"""

# Exact scope first, distance second. The MATERIALIZED CTE is an optimisation fence: the planner
# must fetch the scope's rows through idx_explanation_cache_scope and compute every distance
# exactly; it cannot turn this into an HNSW scan that filters after the graph search and silently
# loses rows (HNSW with a selective filter returns a handful of rows or none). Recall is 100%.
LOOKUP_SIMILAR_SQL = f"""
WITH candidates AS MATERIALIZED (
    SELECT c.id, c.question_embedding <=> $6::real[]::vector AS distance
      FROM explanation_cache c
     WHERE c.tenant_id = $1 AND c.scope_key = $2 AND c.embedding_model = $3
       AND c.data_fingerprint = $4 AND c.expires_at > now()
       AND c.question_embedding IS NOT NULL AND c.embedding_dim = $5
), nearest AS (
    SELECT id, distance FROM candidates ORDER BY distance, id LIMIT $7
)
SELECT {ROW_COLUMNS}, 1 - n.distance AS similarity
  FROM nearest n JOIN explanation_cache e ON e.id = n.id
 ORDER BY n.distance, n.id
"""

# exact_text of the stored question, in SQL (trimmed, one-spaced, lower-case, no trailing
# punctuation); the one-statement hit path filters with the same expression.
EXACT_QUESTION_SQL = (
    "regexp_replace(lower(btrim(regexp_replace(e.question, '\\s+', ' ', 'g'))), "
    "'[\\s?!.,;:]+$', '')"
)

# The same question (exact_text: trimmed, one-spaced, lower-case, no trailing punctuation): no
# vector is needed, so a fixed dashboard question is found without embedding it. The SQL form of
# exact_text only narrows the rows; `cache.store.lookup` checks each in Python.
LOOKUP_QUESTION_SQL = f"""
SELECT {ROW_COLUMNS}, 1.0::float8 AS similarity
  FROM explanation_cache e
 WHERE e.tenant_id = $1 AND e.scope_key = $2 AND e.data_fingerprint = $3
   AND e.expires_at > now() AND e.question <> ''
   AND {EXACT_QUESTION_SQL} = $4
 ORDER BY e.created_at DESC, e.id
 LIMIT $5
"""

# No free text: the scope alone is the key (any embedding model: no vector is compared).
LOOKUP_EXACT_SQL = f"""
SELECT {ROW_COLUMNS}, 1.0::float8 AS similarity
  FROM explanation_cache e
 WHERE e.tenant_id = $1 AND e.scope_key = $2 AND e.data_fingerprint = $3
   AND e.expires_at > now() AND e.question_embedding IS NULL
 ORDER BY e.created_at DESC, e.id
 LIMIT 1
"""

STORE_SQL = """
INSERT INTO explanation_cache (tenant_id, entity_type, scope_key, scope, question,
    question_embedding, embedding_model, embedding_dim, explanation, citations, model,
    prompt_version, data_fingerprint, cost_cents, expires_at)
VALUES ($1, $2, $3, $4::text::jsonb, $5, $6::real[]::vector, $7, $8, $9::text::jsonb,
    $10::text::jsonb, $11, $12, $13, $14, now() + make_interval(secs => $15))
RETURNING id
"""

ADD_HITS_SQL = """
UPDATE explanation_cache e
   SET cache_hit_count = e.cache_hit_count + u.hits,
       last_hit_at = GREATEST(e.last_hit_at, u.last_hit)
  FROM unnest($2::uuid[], $3::int[], $4::timestamptz[]) AS u(id, hits, last_hit)
 WHERE e.id = u.id AND e.tenant_id = $1
"""

INVALIDATE_SQL = "DELETE FROM explanation_cache WHERE tenant_id = $1 AND scope_key = $2"


def entry_of_row(row: asyncpg.Record) -> StoredEntry:
    """A StoredEntry from a lookup row."""
    return StoredEntry(
        id=row["id"],
        tenant_id=row["tenant_id"],
        question=row["question"],
        embedding_model=row["embedding_model"],
        explanation_json=row["explanation"],
        citations_json=row["citations"],
        model=row["model"],
        prompt_version=row["prompt_version"],
        data_fingerprint=row["data_fingerprint"],
        cost_cents=row["cost_cents"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        similarity=float(row["similarity"]),
    )


def _rowcount(status: str) -> int:
    """The row count of a command status such as 'DELETE 3' or 'UPDATE 2'."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


@dataclass(frozen=True)
class PgCacheRows:
    """The cache's rows on one connection inside a transaction that has set the tenant."""

    conn: asyncpg.Connection

    async def entry_without_question(
        self, tenant_id: UUID, scope_key: str, fingerprint: str
    ) -> StoredEntry | None:
        """The scope's newest live entry without free text."""
        row = await self.conn.fetchrow(LOOKUP_EXACT_SQL, tenant_id, scope_key, fingerprint)
        return entry_of_row(row) if row is not None else None

    async def entries_of_question(
        self, tenant_id: UUID, scope_key: str, fingerprint: str, exact_key: str, limit: int
    ) -> Sequence[StoredEntry]:
        """Live entries whose question's SQL exact_text equals `exact_key`, newest first."""
        rows = await self.conn.fetch(
            LOOKUP_QUESTION_SQL, tenant_id, scope_key, fingerprint, exact_key, limit
        )
        return [entry_of_row(r) for r in rows]

    async def nearest_entries(
        self,
        tenant_id: UUID,
        scope_key: str,
        fingerprint: str,
        embedding_model: str,
        embedding: list[float],
        limit: int,
    ) -> Sequence[StoredEntry]:
        """The nearest live entries of this model and dimension, by exact cosine distance."""
        rows = await self.conn.fetch(
            LOOKUP_SIMILAR_SQL,
            tenant_id,
            scope_key,
            embedding_model,
            fingerprint,
            len(embedding),
            embedding,
            limit,
        )
        return [entry_of_row(r) for r in rows]

    async def insert(self, entry: NewEntry) -> UUID:
        """Insert the entry; RLS refuses a tenant other than the transaction's."""
        entry_id: UUID = await self.conn.fetchval(
            STORE_SQL,
            entry.tenant_id,
            entry.subject,
            entry.scope_key,
            entry.scope_json,
            entry.question,
            entry.embedding,
            entry.embedding_model,
            len(entry.embedding) if entry.embedding is not None else None,
            entry.explanation_json,
            entry.citations_json,
            entry.model,
            entry.prompt_version,
            entry.fingerprint,
            entry.cost_cents,
            entry.ttl_seconds,
        )
        return entry_id

    async def add_hits(
        self, tenant_id: UUID, ids: Sequence[UUID], counts: Sequence[int], last: Sequence[datetime]
    ) -> int:
        """One UPDATE ... FROM unnest(...) for the tenant's counts."""
        status = await self.conn.execute(ADD_HITS_SQL, tenant_id, ids, counts, last)
        return _rowcount(status)

    async def delete_scope(self, tenant_id: UUID, scope_key: str) -> int:
        """Delete the scope's entries of the tenant."""
        return _rowcount(await self.conn.execute(INVALIDATE_SQL, tenant_id, scope_key))

    async def purge_expired_batch(self, batch_size: int) -> int:
        """One batch through the narrow definer function (retention's statement)."""
        return await purge_expired_cache(self.conn, batch_size)


class CacheTransactions:
    """`cache.tenancy.TenantTransactions` over a pool: tenant transactions with their cache rows."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        """Transactions on connections of `pool`."""
        self.pool = pool

    @asynccontextmanager
    async def transaction(self, tenant_id: UUID) -> AsyncIterator[rules.CacheRows]:
        """A transaction whose tenant is `tenant_id` (see `db.pool.tenant_transaction`)."""
        async with tenant_transaction(self.pool, tenant_id) as conn:
            yield PgCacheRows(conn)


lookup = on_connection(PgCacheRows, rules.lookup)
store = on_connection(PgCacheRows, rules.store)
add_hits = on_connection(PgCacheRows, rules.add_hits)
invalidate = on_connection(PgCacheRows, rules.invalidate)
purge_expired = on_connection(PgCacheRows, rules.purge_expired)


async def explain_lookup(
    conn: asyncpg.Connection,
    scope: CacheScope,
    *,
    fingerprint: str,
    question_embedding: Sequence[float],
    embedding_model: str,
    limit: int = rules.CANDIDATE_LIMIT,
) -> str:
    """The executed plan of the similarity lookup (EXPLAIN ANALYZE), for tests and operators."""
    vector = rules.vector_of(question_embedding)
    assert vector is not None
    rows = await conn.fetch(
        "EXPLAIN (ANALYZE, COSTS OFF) " + LOOKUP_SIMILAR_SQL,
        scope.tenant_id,
        scope.scope_key(),
        embedding_model,
        fingerprint,
        len(vector),
        vector,
        limit,
    )
    return "\n".join(str(r[0]) for r in rows)
