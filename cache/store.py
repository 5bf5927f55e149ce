"""The explanation cache's SQL (all of it): lookup, store, invalidate, purge and hit counts.

Every function takes an asyncpg connection. Tenant work must run in a transaction whose tenant is
set (`app.current_tenant_id`, as `llm_service.db.pool.tenant_transaction` does): row-level
security then confines it to the tenant, and each query also names the tenant explicitly, so even
a connection that bypasses RLS never crosses tenants. Values go in and out as text / real[] casts,
so nothing here depends on the connection's jsonb or vector codecs.

Matching (see `lookup`): the structured scope and the data fingerprint must be equal and the
entry unexpired. Among those few rows, a question hits first on an exact normalised match (no
vector needed), else the nearest stored questions of the same embedding model (exact cosine
distance) are read and the first that `cache.question_match` accepts on positive evidence is
served: similarity finds candidates, it never decides. A request without free text matches only
entries without free text (question '' and no vector), and vice versa.

API notes. `lookup` and `store` take the question as the user wrote it and the embedding of
`normalise_question(question)` by `embedding_model`; both are None / '' for a request without free
text; `lookup` also takes a question without its vector (then only the exact match is
tried). Vectors of other embedding models, other dimensions, other fingerprints, other scopes and
expired entries are never considered, and a lookup does not count its hit (see `cache.hits`).
`store` keeps the question as written (trimmed); it must run in a transaction whose tenant is the
scope's. `add_hits` must run in a transaction whose tenant is `tenant_id` (the host sets it:
`cache.tenancy`; nothing here sets a tenant) and sorts the ids so that concurrent flushes lock
rows in the same order. `purge_expired` is safe while serving: each batch is one short statement
through a SECURITY DEFINER function that skips rows another transaction holds, and expired rows
are never served anyway; call it outside a transaction so each batch commits on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from cache.question_match import MatchDecision, match
from cache.question_signature import exact_text
from cache.scope import CacheScope, normalise_question

# Similarity no longer decides a hit (`cache.question_match` does); it only ranks which stored
# questions of the exact scope are worth reading. Kept as the figure of GPTCache's own setting
# (cosine >= 0.90) that bench/bench_question_match.py compares with.
DEFAULT_SIMILARITY_THRESHOLD = 0.90
# How many of the nearest entries the matcher reads before the lookup gives up.
CANDIDATE_LIMIT = 8

_ROW_COLUMNS = """e.id, e.tenant_id, e.question, e.embedding_model,
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
SELECT {_ROW_COLUMNS}, 1 - n.distance AS similarity
  FROM nearest n JOIN explanation_cache e ON e.id = n.id
 ORDER BY n.distance, n.id
"""

# The same question (exact_text: trimmed, one-spaced, lower-case, no trailing punctuation): no
# vector is needed, so a fixed dashboard question is found without embedding it. The SQL form of
# exact_text only narrows the rows; `lookup` checks each in Python, so where PostgreSQL's lower()
# disagrees with Python's the result is a miss, never a wrong hit.
LOOKUP_QUESTION_SQL = f"""
SELECT {_ROW_COLUMNS}, 1.0::float8 AS similarity
  FROM explanation_cache e
 WHERE e.tenant_id = $1 AND e.scope_key = $2 AND e.data_fingerprint = $3
   AND e.expires_at > now() AND e.question <> ''
   AND regexp_replace(lower(btrim(regexp_replace(e.question, '\\s+', ' ', 'g'))),
                      '[\\s?!.,;:]+$', '') = $4
 ORDER BY e.created_at DESC, e.id
 LIMIT 4
"""

# No free text: the scope alone is the key (any embedding model: no vector is compared).
LOOKUP_EXACT_SQL = f"""
SELECT {_ROW_COLUMNS}, 1.0::float8 AS similarity
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
PURGE_BATCH_SQL = "SELECT fn_purge_expired_explanation_cache($1)"


@dataclass(frozen=True)
class CacheHit:
    """A cached explanation served for a request: its question and why it matched."""

    entry_id: UUID
    tenant_id: UUID
    question: str
    similarity: float
    embedding_model: str
    explanation: dict[str, Any]
    citations: list[Any]
    model: str
    prompt_version: str
    data_fingerprint: str
    cost_cents: Decimal
    created_at: datetime
    expires_at: datetime
    # Why the stored question answers the asked one: "none" (no free text), "exact" or
    # "paraphrase", and the features both agree on (see cache.question_match).
    match_relation: str = "none"
    agreement: Mapping[str, Any] | None = None


def _dumps(value: object) -> str:
    """JSON for a jsonb column: Decimals as exact numbers (jsonb keeps the scale), UUIDs as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite number: {value}")
        return str(value)
    if isinstance(value, UUID | datetime | date):
        return json.dumps(str(value))
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            items.append(f"{json.dumps(key, ensure_ascii=False)}:{_dumps(item)}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(item) for item in value) + "]"
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _loads(text: str) -> Any:
    """A jsonb column's text: numbers with a fraction become exact Decimals (as the pools do)."""
    return json.loads(text, parse_float=Decimal)


def _hit(row: asyncpg.Record, decision: MatchDecision | None = None) -> CacheHit:
    """A CacheHit from a lookup row (and the match decision that made it one)."""
    return CacheHit(
        entry_id=row["id"],
        tenant_id=row["tenant_id"],
        question=row["question"],
        similarity=float(row["similarity"]),
        embedding_model=row["embedding_model"],
        explanation=_loads(row["explanation"]),
        citations=_loads(row["citations"]),
        model=row["model"],
        prompt_version=row["prompt_version"],
        data_fingerprint=row["data_fingerprint"],
        cost_cents=row["cost_cents"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        match_relation=decision.relation or "none" if decision is not None else "none",
        agreement=decision.agreement if decision is not None else None,
    )


def _vector(embedding: Sequence[float] | None) -> list[float] | None:
    """The embedding as a plain list for a real[] parameter (None stays None)."""
    if embedding is None:
        return None
    vector = [float(x) for x in embedding]
    if not vector:
        raise ValueError("an embedding must have at least one dimension")
    return vector


def _check_question(question: str | None, embedding: Sequence[float] | None) -> str:
    """The normalised question, or ValueError for a vector without free text."""
    normalised = normalise_question(question)
    if not normalised and embedding is not None:
        raise ValueError("a request without free text must not carry an embedding")
    return normalised


async def lookup(
    conn: asyncpg.Connection,
    scope: CacheScope,
    *,
    fingerprint: str,
    question: str | None,
    question_embedding: Sequence[float] | None,
    embedding_model: str,
) -> CacheHit | None:
    """The live entry of this exact scope and data whose question matches, or None.

    Without free text: the scope's entry without free text. With free text: the same question
    (no vector needed); then, if `question_embedding` is given, the nearest stored questions are
    read and the first that `cache.question_match.match` accepts is served.
    """
    normalised = _check_question(question, question_embedding)
    if not normalised:
        row = await conn.fetchrow(LOOKUP_EXACT_SQL, scope.tenant_id, scope.scope_key(), fingerprint)
        return _hit(row) if row is not None else None
    asked = question or ""
    key = exact_text(asked)
    for row in await conn.fetch(
        LOOKUP_QUESTION_SQL, scope.tenant_id, scope.scope_key(), fingerprint, key
    ):
        decision = match(asked, row["question"])
        if decision.relation == "exact":
            return _hit(row, decision)
    vector = _vector(question_embedding)
    if vector is None:
        return None
    rows = await conn.fetch(
        LOOKUP_SIMILAR_SQL,
        scope.tenant_id,
        scope.scope_key(),
        embedding_model,
        fingerprint,
        len(vector),
        vector,
        CANDIDATE_LIMIT,
    )
    for row in rows:
        decision = match(asked, row["question"])
        if decision.hit:
            return _hit(row, decision)
    return None


async def store(
    conn: asyncpg.Connection,
    scope: CacheScope,
    *,
    question: str | None,
    question_embedding: Sequence[float] | None,
    embedding_model: str,
    fingerprint: str,
    explanation: Mapping[str, Any],
    citations: Sequence[Any],
    cost_cents: Decimal | int,
    ttl_seconds: float,
) -> UUID:
    """Insert an explanation for `scope` (the transaction's tenant) and return its id."""
    if bool(normalise_question(question)) != (question_embedding is not None):
        raise ValueError(
            "a question with free text needs its embedding, and a request without free text "
            "must not carry one"
        )
    if not embedding_model.strip():
        raise ValueError("embedding_model must not be blank")
    if not fingerprint:
        raise ValueError("fingerprint must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    if Decimal(cost_cents) < 0:
        raise ValueError("cost_cents must not be negative")
    vector = _vector(question_embedding)
    entry_id: UUID = await conn.fetchval(
        STORE_SQL,
        scope.tenant_id,
        scope.subject,
        scope.scope_key(),
        scope.canonical_json(),
        (question or "").strip() if vector is not None else "",
        vector,
        embedding_model,
        len(vector) if vector is not None else None,
        _dumps(explanation),
        _dumps(list(citations)),
        scope.model,
        scope.prompt_version,
        fingerprint,
        Decimal(cost_cents),
        float(ttl_seconds),
    )
    return entry_id


async def add_hits(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    hits: Mapping[UUID, tuple[int, datetime]],
) -> int:
    """Add one tenant's buffered counts (id -> (hits, last hit)) in one UPDATE; rows updated.

    `conn` is in a transaction whose tenant is `tenant_id` (RLS hides every other row).
    """
    if not hits:
        return 0
    ids = sorted(hits)
    status = await conn.execute(
        ADD_HITS_SQL,
        tenant_id,
        ids,
        [hits[i][0] for i in ids],
        [hits[i][1] for i in ids],
    )
    return _rowcount(status)


async def invalidate(conn: asyncpg.Connection, scope: CacheScope) -> int:
    """Delete every entry of this scope for its tenant (all questions, models, fingerprints)."""
    return _rowcount(await conn.execute(INVALIDATE_SQL, scope.tenant_id, scope.scope_key()))


async def purge_expired(conn: asyncpg.Connection, *, batch_size: int = 1000) -> int:
    """Delete every tenant's expired entries in batches; return how many (see the module doc)."""
    if not 1 <= batch_size <= 100_000:
        raise ValueError("batch_size must be between 1 and 100000")
    total = 0
    while True:
        deleted: int = await conn.fetchval(PURGE_BATCH_SQL, batch_size)
        total += deleted
        if deleted < batch_size:
            return total


async def explain_lookup(
    conn: asyncpg.Connection,
    scope: CacheScope,
    *,
    fingerprint: str,
    question_embedding: Sequence[float],
    embedding_model: str,
) -> str:
    """The executed plan of the similarity lookup (EXPLAIN ANALYZE), for tests and operators."""
    vector = _vector(question_embedding)
    assert vector is not None
    rows = await conn.fetch(
        "EXPLAIN (ANALYZE, COSTS OFF) " + LOOKUP_SIMILAR_SQL,
        scope.tenant_id,
        scope.scope_key(),
        embedding_model,
        fingerprint,
        len(vector),
        vector,
        CANDIDATE_LIMIT,
    )
    return "\n".join(str(r[0]) for r in rows)


def _rowcount(status: str) -> int:
    """The row count of a command status such as 'DELETE 3' or 'UPDATE 2'."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
