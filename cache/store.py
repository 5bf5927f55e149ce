"""The explanation cache's rules: what a lookup serves, what a store accepts, hits and purges.

The rows live in a store the host implements (`CacheRows`; llm_service's is
`llm_service.explanations.cache_repository.PgCacheRows`), so this module names no table and sets
no tenant. A `CacheRows` works inside a transaction its caller owns and has set the tenant on;
row-level security then confines it to the tenant, and each of its statements also names the
tenant explicitly, so even a connection that bypasses RLS never crosses tenants. JSON values
cross the interface as text (`_dumps` / `_loads`), so no store depends on a driver's codecs.

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
`cache.tenancy`) and sorts the ids so that concurrent flushes lock rows in the same order.
`purge_expired` is safe while serving: each batch is one short statement that skips rows another
transaction holds, and expired rows are never served anyway; call it outside a transaction so
each batch commits on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

from cache.question_match import MatchDecision, match
from cache.question_signature import exact_text
from cache.scope import CacheScope, normalise_question

# Similarity no longer decides a hit (`cache.question_match` does); it only ranks which stored
# questions of the exact scope are worth reading. Kept as the figure of GPTCache's own setting
# (cosine >= 0.90) that bench/bench_question_match.py compares with.
DEFAULT_SIMILARITY_THRESHOLD = 0.90
# How many of the nearest entries the matcher reads before the lookup gives up.
CANDIDATE_LIMIT = 8
# How many entries of the same question (exact_text) a lookup reads.
SAME_QUESTION_LIMIT = 4


@dataclass(frozen=True)
class StoredEntry:
    """A live entry as a store reads it: JSON values as text, and its similarity to the ask."""

    id: UUID
    tenant_id: UUID
    question: str
    embedding_model: str
    explanation_json: str
    citations_json: str
    model: str
    prompt_version: str
    data_fingerprint: str
    cost_cents: Decimal
    created_at: datetime
    expires_at: datetime
    similarity: float


@dataclass(frozen=True)
class NewEntry:
    """What `store` writes: one explanation of one scope, question and data, for `ttl_seconds`."""

    tenant_id: UUID
    subject: str
    scope_key: str
    scope_json: str
    question: str
    embedding: list[float] | None
    embedding_model: str
    explanation_json: str
    citations_json: str
    model: str
    prompt_version: str
    fingerprint: str
    cost_cents: Decimal
    ttl_seconds: float


class CacheRows(Protocol):
    """Where the cache's entries live; one instance per transaction (tenant already set).

    Every read returns only unexpired entries of the tenant, scope and fingerprint given.
    """

    async def entry_without_question(
        self, tenant_id: UUID, scope_key: str, fingerprint: str
    ) -> StoredEntry | None:
        """The newest entry without free text (no vector) of this scope and data."""
        ...

    async def entries_of_question(
        self, tenant_id: UUID, scope_key: str, fingerprint: str, exact_key: str, limit: int
    ) -> Sequence[StoredEntry]:
        """Up to `limit` entries whose question's `exact_text` may be `exact_key`, newest first.

        The store may return more candidates than the exact ones (the caller checks each).
        """
        ...

    async def nearest_entries(
        self,
        tenant_id: UUID,
        scope_key: str,
        fingerprint: str,
        embedding_model: str,
        embedding: list[float],
        limit: int,
    ) -> Sequence[StoredEntry]:
        """The `limit` entries of this model and dimension nearest to `embedding`, nearest first.

        Distances are exact over every entry of the scope (no approximate index may drop one).
        """
        ...

    async def insert(self, entry: NewEntry) -> UUID:
        """Write the entry (expiring `ttl_seconds` from the database's now); its id."""
        ...

    async def add_hits(
        self, tenant_id: UUID, ids: Sequence[UUID], counts: Sequence[int], last: Sequence[datetime]
    ) -> int:
        """Add `counts[i]` hits (the last at `last[i]`) to entry `ids[i]`; rows updated."""
        ...

    async def delete_scope(self, tenant_id: UUID, scope_key: str) -> int:
        """Delete every entry of this scope of the tenant; how many."""
        ...

    async def purge_expired_batch(self, batch_size: int) -> int:
        """Delete up to `batch_size` expired entries of any tenant (skipping locked rows)."""
        ...


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


def hit_from_entry(entry: StoredEntry, decision: MatchDecision | None = None) -> CacheHit:
    """A CacheHit from a stored entry (and the match decision that made it one)."""
    return CacheHit(
        entry_id=entry.id,
        tenant_id=entry.tenant_id,
        question=entry.question,
        similarity=entry.similarity,
        embedding_model=entry.embedding_model,
        explanation=_loads(entry.explanation_json),
        citations=_loads(entry.citations_json),
        model=entry.model,
        prompt_version=entry.prompt_version,
        data_fingerprint=entry.data_fingerprint,
        cost_cents=entry.cost_cents,
        created_at=entry.created_at,
        expires_at=entry.expires_at,
        match_relation=decision.relation or "none" if decision is not None else "none",
        agreement=decision.agreement if decision is not None else None,
    )


def vector_of(embedding: Sequence[float] | None) -> list[float] | None:
    """The embedding as a plain list of floats (None stays None); ValueError when empty."""
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
    rows: CacheRows,
    scope: CacheScope,
    *,
    fingerprint: str,
    question: str | None,
    question_embedding: Sequence[float] | None,
    embedding_model: str,
    same_question_read: bool = False,
) -> CacheHit | None:
    """The live entry of this exact scope and data whose question matches, or None.

    Without free text: the scope's entry without free text. With free text: the same question
    (no vector needed), unless `same_question_read` (the caller already looked for it in this
    scope and data); then, if `question_embedding` is given, the nearest stored questions are
    read and the first that `cache.question_match.match` accepts is served.
    """
    normalised = _check_question(question, question_embedding)
    key = scope.scope_key()
    if not normalised:
        entry = await rows.entry_without_question(scope.tenant_id, key, fingerprint)
        return hit_from_entry(entry) if entry is not None else None
    asked = question or ""
    # The store's form of exact_text only narrows the rows; each is checked here, so where the
    # database's lower() disagrees with Python's the result is a miss, never a wrong hit.
    if not same_question_read:
        for entry in await rows.entries_of_question(
            scope.tenant_id, key, fingerprint, exact_text(asked), SAME_QUESTION_LIMIT
        ):
            decision = match(asked, entry.question)
            if decision.relation == "exact":
                return hit_from_entry(entry, decision)
    vector = vector_of(question_embedding)
    if vector is None:
        return None
    nearest = await rows.nearest_entries(
        scope.tenant_id, key, fingerprint, embedding_model, vector, CANDIDATE_LIMIT
    )
    for entry in nearest:
        decision = match(asked, entry.question)
        if decision.hit:
            return hit_from_entry(entry, decision)
    return None


async def store(
    rows: CacheRows,
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
    vector = vector_of(question_embedding)
    return await rows.insert(
        NewEntry(
            tenant_id=scope.tenant_id,
            subject=scope.subject,
            scope_key=scope.scope_key(),
            scope_json=scope.canonical_json(),
            question=(question or "").strip() if vector is not None else "",
            embedding=vector,
            embedding_model=embedding_model,
            explanation_json=_dumps(explanation),
            citations_json=_dumps(list(citations)),
            model=scope.model,
            prompt_version=scope.prompt_version,
            fingerprint=fingerprint,
            cost_cents=Decimal(cost_cents),
            ttl_seconds=float(ttl_seconds),
        )
    )


async def add_hits(
    rows: CacheRows,
    tenant_id: UUID,
    hits: Mapping[UUID, tuple[int, datetime]],
) -> int:
    """Add one tenant's buffered counts (id -> (hits, last hit)) in one write; rows updated.

    `rows` is in a transaction whose tenant is `tenant_id` (RLS hides every other row).
    """
    if not hits:
        return 0
    ids = sorted(hits)
    return await rows.add_hits(tenant_id, ids, [hits[i][0] for i in ids], [hits[i][1] for i in ids])


async def invalidate(rows: CacheRows, scope: CacheScope) -> int:
    """Delete every entry of this scope for its tenant (all questions, models, fingerprints)."""
    return await rows.delete_scope(scope.tenant_id, scope.scope_key())


async def purge_expired(rows: CacheRows, *, batch_size: int = 1000) -> int:
    """Delete every tenant's expired entries in batches; return how many (see the module doc)."""
    if not 1 <= batch_size <= 100_000:
        raise ValueError("batch_size must be between 1 and 100000")
    total = 0
    while True:
        deleted = await rows.purge_expired_batch(batch_size)
        total += deleted
        if deleted < batch_size:
            return total
