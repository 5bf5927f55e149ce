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
The lookup's conditions are those of `cache.store` (LOOKUP_EXACT_SQL / LOOKUP_QUESTION_SQL);
a change there must be made here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import asyncpg

from cache.question_match import match
from cache.question_signature import exact_text
from cache.store import CacheHit
from llm_service.analytics.fingerprint_queries import fingerprint_sql

_TENANT = "k.tenant_id"

_KEY = """
WITH k AS MATERIALIZED (
    SELECT t.tenant, nullif(t.tenant, '')::uuid AS tenant_id
      FROM (SELECT set_config('app.current_tenant_id',
                              coalesce(fn_tenant_for_api_key_hash($6)::text, ''), true)
                   AS tenant) AS t
)"""

_COLUMNS = """e.id, e.tenant_id AS entry_tenant, e.question, e.embedding_model,
       e.explanation::text AS explanation, e.citations::text AS citations, e.model,
       e.prompt_version, e.data_fingerprint, e.cost_cents, e.created_at, e.expires_at"""


def _statement(entry_filter: str, limit: int) -> str:
    """The merged statement for one kind of lookup (the entry's extra predicate and row limit)."""
    return f"""{_KEY}
SELECT k.tenant, fp.fingerprint, fp.seen, {_COLUMNS}
  FROM k
 CROSS JOIN LATERAL ({fingerprint_sql(_TENANT)}) AS fp
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
HIT_NO_QUESTION_SQL: Final = _statement("e.question_embedding IS NULL AND $8::text IS NULL", 1)
# The same question (exact_text in SQL, as cache.store's; each row is checked in Python).
HIT_SAME_QUESTION_SQL: Final = _statement(
    "e.question <> '' AND regexp_replace(lower(btrim(regexp_replace(e.question, '\\s+', ' ', "
    "'g'))), '[\\s?!.,;:]+$', '') = $8",
    4,
)


@dataclass(frozen=True)
class FastHit:
    """What the one statement found: the key's tenant ('' if none), the fingerprint, a hit."""

    tenant: str
    fingerprint: str
    seen_tenant: bool
    hit: CacheHit | None


def _loads(text: str) -> Any:
    """A jsonb column's text: numbers with a fraction become exact Decimals."""
    return json.loads(text, parse_float=Decimal)


def _hit(row: asyncpg.Record, relation: str, agreement: dict[str, Any] | None) -> CacheHit:
    """A CacheHit from a row of the merged statement."""
    return CacheHit(
        entry_id=row["id"],
        tenant_id=row["entry_tenant"],
        question=row["question"],
        similarity=1.0,
        embedding_model=row["embedding_model"],
        explanation=_loads(row["explanation"]),
        citations=_loads(row["citations"]),
        model=row["model"],
        prompt_version=row["prompt_version"],
        data_fingerprint=row["data_fingerprint"],
        cost_cents=row["cost_cents"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        match_relation=relation,
        agreement=agreement,
    )


async def hit_in_one_statement(
    conn: asyncpg.Connection,
    api_key_hash: str,
    fingerprint_args: tuple[Any, ...],
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
    if asked:
        rows = await conn.fetch(
            HIT_SAME_QUESTION_SQL, *fingerprint_args, api_key_hash, scope_key, exact_text(asked)
        )
    else:
        rows = await conn.fetch(
            HIT_NO_QUESTION_SQL, *fingerprint_args, api_key_hash, scope_key, None
        )
    first = rows[0]
    found: CacheHit | None = None
    for row in rows:
        if row["id"] is None:
            break
        if not asked:
            found = _hit(row, "none", None)
            break
        decision = match(asked, row["question"])
        if decision.relation == "exact":
            found = _hit(row, "exact", decision.agreement)
            break
    return FastHit(first["tenant"], first["fingerprint"], bool(first["seen"]), found)
