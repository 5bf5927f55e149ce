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
The lookup's conditions are those of `cache_repository` (LOOKUP_EXACT_SQL / LOOKUP_QUESTION_SQL,
sharing its columns and its exact-question expression); a change there must be made here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import asyncpg

from cache.question_match import match
from cache.question_signature import exact_text
from cache.store import CacheHit, hit_from_entry
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

_KEY = f"""
WITH k AS MATERIALIZED (
    SELECT t.tenant, nullif(t.tenant, '')::uuid AS tenant_id
      FROM (SELECT {tenant_from_key_sql("$6")} AS tenant) AS t
)"""


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
