"""A cached hit in ONE statement: the key's tenant resolved and set, the fingerprint, the lookup.

Why one statement is safe outside a transaction block (the hit path's only round trip):
- the statement runs in its own implicit transaction, so `set_config(..., true)` lasts exactly
  as long as the statement; before it runs the setting is '' (connections never keep a
  session-level tenant), so the only tenant this statement can ever see is the key's, or none;
- every tenant table is read through row-level security AND an explicit `tenant_id = ` the
  tenant the key resolved to, reached by a LATERAL reference to the CTE that set it: the scans
  are the inner side of a parameterised nested loop, run after that row exists;
- an unknown or revoked key sets '' and reads nothing (RLS compares with NULL); the statement
  also reports whether every journal read saw a tenant set (`seen`), and the caller takes the
  transactional path when it did not, so an evaluation order that ever differed would cost a
  slower answer, never a stale or foreign one.
The lookup's conditions are those of `cache_repository` (LOOKUP_EXACT_SQL / LOOKUP_QUESTION_SQL /
LOOKUP_SIMILAR_SQL, sharing its columns and its exact-question expression); a change there must
be made here too.

A paraphrase whose question's vector is held in-process takes a second statement on the same
connection, still outside a transaction block (`nearest_in_one_statement`): the key resolved and
the tenant set again, and the nearest stored questions read under the fingerprint the first
statement computed (as the transactional path reuses it), only if the key still resolves to the
tenant the vector was taken for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import asyncpg

from cache.question_match import match
from cache.question_signature import exact_text
from cache.store import CANDIDATE_LIMIT, CacheHit, hit_from_entry, vector_of
from llm_service.analytics.fingerprint_queries import (
    FingerprintShape,
    fingerprint_sql,
    shape_of,
)
from llm_service.db.queries import tenant_from_key_sql
from llm_service.explanations.cache_repository import (
    EXACT_QUESTION_SQL,
    ROW_COLUMNS,
    entry_of_row,
)

_TENANT = "k.tenant_id"


def _key(param: str) -> str:
    """The CTE that resolves the key hash `param` and sets its tenant for the statement."""
    return f"""
WITH k AS MATERIALIZED (
    SELECT t.tenant, nullif(t.tenant, '')::uuid AS tenant_id
      FROM (SELECT {tenant_from_key_sql(param)} AS tenant) AS t
)"""


_KEY = _key("$6")


def _statement(entry_filter: str, limit: int, shape: FingerprintShape) -> str:
    """The merged statement for one kind of lookup (the entry's extra predicate and row limit)
    and one shape of the fingerprint's arrays."""
    return f"""{_KEY}
SELECT k.tenant, fp.fingerprint, fp.seen, {ROW_COLUMNS}, 1.0::float8 AS similarity
  FROM k
 CROSS JOIN LATERAL ({fingerprint_sql(shape, _TENANT)}) AS fp
  LEFT JOIN LATERAL (
    SELECT e.*
      FROM explanation_cache e
     WHERE e.tenant_id = k.tenant_id AND e.scope_key = $7 AND e.data_fingerprint = fp.fingerprint
       AND e.expires_at > now() AND {entry_filter}
     ORDER BY e.created_at DESC, e.id
     LIMIT {limit}
  ) AS e ON true
"""


# No free text: the scope's entry without a question ($8 is unused, NULL).
_NO_QUESTION: Final = ("e.question_embedding IS NULL AND $8::text IS NULL", 1)
# The same question (exact_text in SQL, as cache.store's; each row is checked in Python).
_SAME_QUESTION: Final = (f"e.question <> '' AND {EXACT_QUESTION_SQL} = $8", 4)


@lru_cache(maxsize=64)
def hit_sql(shape: FingerprintShape, *, question: bool) -> str:
    """The one statement for fingerprint arrays of `shape`, with or without a question."""
    return _statement(*(_SAME_QUESTION if question else _NO_QUESTION), shape)


@dataclass(frozen=True)
class FastHit:
    """What the one statement found: the key's tenant ('' if none), the fingerprint, a hit."""

    tenant: str
    fingerprint: str
    seen_tenant: bool
    hit: CacheHit | None


async def hit_in_one_statement(
    conn: asyncpg.Connection,
    api_key_hash: str,
    fingerprint_args: Sequence[Any],
    scope_key: str,
    question: str | None,
) -> FastHit:
    """Resolve the key, compute the fingerprint and look the entry up, in one round trip.

    Run it OUTSIDE a transaction block (its own implicit transaction bounds the tenant).
    `question` None or blank looks for the entry without free text; otherwise for the same
    question (exact match only: paraphrases need the vector, on the transactional path).
    """
    if conn.is_in_transaction():
        raise RuntimeError("the one-statement hit must run outside a transaction block")
    asked = (question or "").strip()
    sql = hit_sql(shape_of(fingerprint_args), question=bool(asked))
    key = exact_text(asked) if asked else None
    rows = await conn.fetch(sql, *fingerprint_args, api_key_hash, scope_key, key)
    first = rows[0]
    found: CacheHit | None = None
    for row in rows:
        if row["id"] is None:
            break
        if not asked:
            found = hit_from_entry(entry_of_row(row))
            break
        decision = match(asked, row["question"])
        if decision.relation == "exact":
            found = hit_from_entry(entry_of_row(row), decision)
            break
    return FastHit(first["tenant"], first["fingerprint"], bool(first["seen"]), found)


# The nearest stored questions (LOOKUP_SIMILAR_SQL's rows: exact distances over the scope's rows,
# `OFFSET 0` fencing off an approximate HNSW scan), of the tenant the vector was taken for ($2).
NEAREST_SQL = f"""{_key("$1")}
SELECT k.tenant, {ROW_COLUMNS}, 1 - e.distance AS similarity
  FROM k
  LEFT JOIN LATERAL (
    SELECT c.*
      FROM (SELECT n.*, n.question_embedding <=> $7::real[]::vector AS distance
              FROM explanation_cache n
             WHERE n.tenant_id = k.tenant_id AND k.tenant_id = $2::uuid AND n.scope_key = $3
               AND n.embedding_model = $4 AND n.data_fingerprint = $5
               AND n.expires_at > now() AND n.question_embedding IS NOT NULL
               AND n.embedding_dim = $6
            OFFSET 0) AS c
     ORDER BY c.distance, c.id
     LIMIT {CANDIDATE_LIMIT}
  ) AS e ON true
 ORDER BY e.distance, e.id
"""


async def nearest_in_one_statement(
    conn: asyncpg.Connection,
    api_key_hash: str,
    first: FastHit,
    scope_key: str,
    embedding_model: str,
    vector: Sequence[float],
    question: str,
) -> tuple[str, CacheHit | None]:
    """The key's tenant now ('' if none) and the nearest stored question the matcher accepts
    for `question`, under the fingerprint the `first` statement computed, compared only if the
    key still resolves to the tenant it found (whose vector `vector` is).

    Run it OUTSIDE a transaction block, like `hit_in_one_statement`.
    """
    if conn.is_in_transaction():
        raise RuntimeError("the one-statement lookup must run outside a transaction block")
    values = vector_of(vector)
    if values is None:
        raise ValueError("a paraphrase lookup needs the question's vector")
    rows = await conn.fetch(
        NEAREST_SQL,
        api_key_hash,
        first.tenant,
        scope_key,
        embedding_model,
        first.fingerprint,
        len(values),
        values,
    )
    for row in rows:
        if row["id"] is None:
            break
        decision = match(question, row["question"])
        if decision.hit:
            return rows[0]["tenant"], hit_from_entry(entry_of_row(row), decision)
    return rows[0]["tenant"], None
