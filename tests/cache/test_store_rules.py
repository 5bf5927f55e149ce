"""cache talks to its rows only through the CacheRows interface the service implements.

The rules of `cache.store` (what a lookup serves, what a store accepts, hit and purge batching)
run here over an in-memory store behind the same interface; the real one
(`llm_service.explanations.cache_repository`) is tested against PostgreSQL in test_store.py.
"""

from __future__ import annotations

import ast
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest

from cache import store
from cache.scope import CacheScope
from cache.store import NewEntry, StoredEntry

ScopeFactory = Callable[..., CacheScope]
CACHE = Path(__file__).resolve().parents[2] / "cache"
NOW = datetime(2026, 12, 7, tzinfo=UTC)


def test_cache_imports_no_database_driver() -> None:
    """Rows (CacheRows), hit writes (TenantTransactions) and flight locks (FlightLocks) all go
    through interfaces the host implements: no module of cache talks to PostgreSQL itself."""
    found = []
    for path in sorted(CACHE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in {"asyncpg", "psycopg"}
            ]
    assert found == []


class _MemoryRows:
    """An in-memory store behind the same interface: returns what the test put in its lists."""

    def __init__(self) -> None:
        self.without_question: StoredEntry | None = None
        self.of_question: list[StoredEntry] = []
        self.nearest: list[StoredEntry] = []
        self.inserted: list[NewEntry] = []
        self.hit_writes: list[tuple[list[UUID], list[int]]] = []
        self.expired = 0
        self.calls: list[str] = []

    async def entry_without_question(
        self, tenant_id: UUID, scope_key: str, fingerprint: str
    ) -> StoredEntry | None:
        self.calls.append("without_question")
        return self.without_question

    async def entries_of_question(
        self, tenant_id: UUID, scope_key: str, fingerprint: str, exact_key: str, limit: int
    ) -> Sequence[StoredEntry]:
        self.calls.append(f"of_question:{exact_key}:{limit}")
        return self.of_question[:limit]

    async def nearest_entries(
        self,
        tenant_id: UUID,
        scope_key: str,
        fingerprint: str,
        embedding_model: str,
        embedding: list[float],
        limit: int,
    ) -> Sequence[StoredEntry]:
        self.calls.append(f"nearest:{limit}")
        return self.nearest[:limit]

    async def insert(self, entry: NewEntry) -> UUID:
        self.inserted.append(entry)
        return uuid.uuid4()

    async def add_hits(
        self, tenant_id: UUID, ids: Sequence[UUID], counts: Sequence[int], last: Sequence[datetime]
    ) -> int:
        self.hit_writes.append((list(ids), list(counts)))
        return len(ids)

    async def delete_scope(self, tenant_id: UUID, scope_key: str) -> int:
        return 0

    async def purge_expired_batch(self, batch_size: int) -> int:
        self.calls.append(f"purge:{batch_size}")
        n = min(batch_size, self.expired)
        self.expired -= n
        return n


def _entry(question: str, similarity: float = 1.0) -> StoredEntry:
    return StoredEntry(
        id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        question=question,
        embedding_model="m",
        explanation_json='{"summary": "s", "share": 0.6250}',
        citations_json="[]",
        model="openai/gpt-4o-mini",
        prompt_version="explain-v1",
        data_fingerprint="fp",
        cost_cents=Decimal("0.01"),
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        similarity=similarity,
    )


async def _lookup(
    rows: _MemoryRows, scope: CacheScope, question: str | None, vector: list[float] | None
) -> store.CacheHit | None:
    return await store.lookup(
        rows,
        scope,
        fingerprint="fp",
        question=question,
        question_embedding=vector,
        embedding_model="m",
    )


async def test_a_near_miss_the_store_ranks_first_is_never_served(
    make_scope: ScopeFactory,
) -> None:
    """Similarity only finds candidates: a reversed question at 0.99 misses, the paraphrase hits."""
    rows = _MemoryRows()
    paraphrase = _entry("Which channel contributed most to the decline?", 0.97)
    rows.nearest = [_entry("Which channel contributed least to the decline?", 0.99), paraphrase]
    hit = await _lookup(
        rows, make_scope(uuid.uuid4()), "which channel contributed the most to the decline", [1.0]
    )
    assert hit is not None and hit.entry_id == paraphrase.id
    assert hit.match_relation == "paraphrase"
    assert hit.explanation["share"] == Decimal("0.6250")

    rows.nearest = rows.nearest[:1]
    assert (
        await _lookup(rows, make_scope(uuid.uuid4()), "Which channel contributed most?", [1.0])
        is None
    )


async def test_a_same_question_row_that_is_not_the_same_question_is_not_exact(
    make_scope: ScopeFactory,
) -> None:
    """The store's exact_text only narrows: a row whose text differs is checked and refused."""
    rows = _MemoryRows()
    rows.of_question = [_entry("Why did revenue drop in Istanbul?")]
    hit = await _lookup(rows, make_scope(uuid.uuid4()), "Why did revenue drop in İstanbul?", None)
    assert hit is None
    assert rows.calls[0].startswith("of_question:") and rows.calls[0].endswith(":4")
    assert not any(c.startswith("nearest") for c in rows.calls)  # no vector: no similarity read


async def test_without_free_text_only_the_entry_without_question_is_read(
    make_scope: ScopeFactory,
) -> None:
    rows = _MemoryRows()
    rows.of_question = [_entry("anything")]
    assert await _lookup(rows, make_scope(uuid.uuid4()), "  ", None) is None
    assert rows.calls == ["without_question"]
    with pytest.raises(ValueError, match="without free text"):
        await _lookup(rows, make_scope(uuid.uuid4()), None, [1.0])


async def test_store_validates_before_it_writes(make_scope: ScopeFactory) -> None:
    rows = _MemoryRows()
    scope = make_scope(uuid.uuid4())
    bad: list[dict[str, object]] = [
        {"question": "Why?", "question_embedding": None},
        {"question": None, "question_embedding": [1.0]},
        {"question": "Why?", "question_embedding": []},
        {"question": "Why?", "question_embedding": [1.0], "ttl_seconds": 0},
        {"question": "Why?", "question_embedding": [1.0], "cost_cents": Decimal("-0.01")},
        {"question": "Why?", "question_embedding": [1.0], "fingerprint": ""},
        {"question": "Why?", "question_embedding": [1.0], "embedding_model": " "},
        {"question": "Why?", "question_embedding": [1.0], "explanation": {"x": Decimal("NaN")}},
        {"question": "Why?", "question_embedding": [1.0], "explanation": {1: "key"}},
    ]
    for changes in bad:
        arguments: dict[str, object] = {
            "embedding_model": "m",
            "fingerprint": "fp",
            "explanation": {"summary": "s"},
            "citations": [],
            "cost_cents": Decimal(0),
            "ttl_seconds": 60.0,
            **changes,
        }
        with pytest.raises((ValueError, TypeError)):
            await store.store(rows, scope, **arguments)  # type: ignore[arg-type]
    assert rows.inserted == []

    await store.store(
        rows,
        scope,
        question="  Why did it drop?  ",
        question_embedding=[1, 0],
        embedding_model="m",
        fingerprint="fp",
        explanation={"share": Decimal("0.6250")},
        citations=[{"rows": 7}],
        cost_cents=3,
        ttl_seconds=60,
    )
    (entry,) = rows.inserted
    assert entry.question == "Why did it drop?"
    assert entry.embedding == [1.0, 0.0]
    assert entry.explanation_json == '{"share":0.6250}'
    assert entry.scope_key == scope.scope_key() and entry.tenant_id == scope.tenant_id


async def test_hits_are_written_in_id_order_and_purges_batch_until_short() -> None:
    rows = _MemoryRows()
    ids = [uuid.uuid4() for _ in range(5)]
    hits = {i: (n + 1, NOW) for n, i in enumerate(ids)}
    assert await store.add_hits(rows, uuid.uuid4(), hits) == 5
    assert await store.add_hits(rows, uuid.uuid4(), {}) == 0
    ((written, counts),) = rows.hit_writes
    assert written == sorted(ids)
    assert counts == [hits[i][0] for i in sorted(ids)]

    rows.expired = 5
    assert await store.purge_expired(rows, batch_size=2) == 5
    assert [c for c in rows.calls if c.startswith("purge")] == ["purge:2"] * 3
    with pytest.raises(ValueError, match="batch_size"):
        await store.purge_expired(rows, batch_size=0)


async def test_a_caller_that_already_read_the_same_question_gets_only_the_nearest(
    make_scope: ScopeFactory,
) -> None:
    """The one-statement hit already looked for the same question: a paraphrase's lookup must
    not read those rows again, only the nearest; and without a vector it reads nothing."""
    rows = _MemoryRows()
    rows.of_question = [_entry("which channel contributed the most to the decline")]
    paraphrase = _entry("Which channel contributed most to the decline?", 0.97)
    rows.nearest = [paraphrase]
    hit = await store.lookup(
        rows,
        make_scope(uuid.uuid4()),
        fingerprint="fp",
        question="which channel contributed the most to the decline",
        question_embedding=[1.0],
        embedding_model="m",
        same_question_read=True,
    )
    assert hit is not None and hit.entry_id == paraphrase.id
    assert rows.calls == ["nearest:8"]
    rows.calls.clear()
    assert (
        await store.lookup(
            rows,
            make_scope(uuid.uuid4()),
            fingerprint="fp",
            question="which channel contributed the most to the decline",
            question_embedding=None,
            embedding_model="m",
            same_question_read=True,
        )
        is None
    )
    assert rows.calls == []
