"""The explanation cache under load: lookup latency and exact-scope recall (figures, no pass/fail).

Run from the repository root: `python -m bench.bench_cache [--entries N --tenants N ...]`.

An embedded PostgreSQL is started in a temporary directory (deleted afterwards) and migrated.
200 tenants get 100,000 entries between them (COPY; random unit vectors as filler, a tenth of it
expired), plus known entries stored through `cache.store.store` with real embeddings of labelled
questions (tests/cache/data/question_pairs.jsonl), each in a scope shared with random filler and
with two other real questions. Then 20 concurrent asyncio clients look entries up as the
application role under row-level security, each request embedding its question with the local
model first, as the service will. HTTP-level figures will come with the route.

Recall: every known entry is looked up with its exact question and with each paraphrase that the
threshold and the question matcher accept (computed here); all of them must hit that entry. For
contrast, the same lookups through a plain `ORDER BY distance LIMIT 1` query with the HNSW index
forced show what an approximate search with a selective filter loses.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from cache.embedding_local import MODEL_ID, LocalEmbedder, get_local_embedder
from cache.hits import HitCounter
from cache.question_match import match
from cache.scope import CacheScope, normalise_question
from cache.store import DEFAULT_SIMILARITY_THRESHOLD, CacheHit
from llm_service.db import migrate
from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.queries import set_tenant
from llm_service.db.urls import resolve_urls
from llm_service.explanations import cache_repository as store
from llm_service.settings import Settings

PAIRS_FILE = Path(__file__).resolve().parents[1] / "tests/cache/data/question_pairs.jsonl"
FINGERPRINT = "fp-current"
CHANNELS = ("paid_social", "paid_search", "email", "organic", "display", "affiliate")
METRICS = ("revenue", "conversions", "roas", "cpa")
FILLER_PER_KNOWN_SCOPE = 20
SCOPES_PER_TENANT = 50
COPY_CHUNK = 10_000
# Questions stored beside a known one are at most this similar to it and its paraphrases.
DISTRACTOR_MAX_SIMILARITY = 0.6
# Per-component noise on other tenants' copies of a question: a noise norm of about 0.25.
CROWD_NOISE = 0.25 / 384**0.5
COLUMNS = (
    "tenant_id",
    "entity_type",
    "scope_key",
    "scope",
    "question",
    "question_embedding",
    "embedding_model",
    "embedding_dim",
    "explanation",
    "citations",
    "model",
    "prompt_version",
    "data_fingerprint",
    "cost_cents",
    "expires_at",
)
NAIVE_HNSW_SQL = """
SELECT id FROM explanation_cache
 WHERE tenant_id = $1 AND scope_key = $2 AND embedding_model = $3 AND data_fingerprint = $4
   AND expires_at > now() AND embedding_dim = 384
 ORDER BY question_embedding::vector(384) <=> $5::real[]::vector(384)
 LIMIT 1
"""


@dataclass(frozen=True)
class Known:
    """A known entry: its scope, stored question and the paraphrases that should find it."""

    entry_id: uuid.UUID
    scope: CacheScope
    question: str
    paraphrases: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """One lookup of the latency run."""

    scope: CacheScope
    question: str
    expected: uuid.UUID | None


def _pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def _ms(values: Sequence[float]) -> str:
    """p50 / p95 / p99 / max of durations in seconds, as milliseconds."""
    return (
        f"p50 {_pct(values, 50) * 1000:6.2f} ms   p95 {_pct(values, 95) * 1000:6.2f} ms   "
        f"p99 {_pct(values, 99) * 1000:6.2f} ms   max {max(values) * 1000:6.2f} ms"
    )


def _scope(tenant_id: uuid.UUID, index: int) -> CacheScope:
    """A realistic structured scope, varied by index."""
    start = date(2026, 9, 7) + timedelta(weeks=index % 10)
    return CacheScope(
        tenant_id=tenant_id,
        subject="channel_performance",
        params={
            "channel": CHANNELS[index % len(CHANNELS)],
            "metric": METRICS[index % len(METRICS)],
            "start": start,
            "end": start + timedelta(days=6),
            "comparison": "previous_period",
        },
        model="openai/gpt-4o-mini",
        prompt_version="explain-v1",
    )


def _accepted_pairs(embedder: LocalEmbedder) -> tuple[list[tuple[str, str]], list[str]]:
    """Paraphrase pairs the default threshold accepts, and every question of the labelled set."""
    pairs = [json.loads(line) for line in PAIRS_FILE.read_text().splitlines() if line.strip()]
    same = [(p["a"], p["b"]) for p in pairs if p["same"]]
    vectors = embedder.embed([normalise_question(t) for pair in same for t in pair])
    accepted = []
    for i, (a, b) in enumerate(same):
        similarity = float(np.dot(vectors[2 * i], vectors[2 * i + 1]))
        if similarity >= DEFAULT_SIMILARITY_THRESHOLD and match(b, a).hit:
            accepted.append((a, b))
    questions = sorted({t for p in pairs for t in (p["a"], p["b"])})
    return accepted, questions


def _unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """`count` random unit vectors of dimension 384."""
    raw = rng.standard_normal((count, 384)).astype(np.float32)
    unit: np.ndarray[Any, np.dtype[np.float32]] = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    return unit


def _filler_rows(
    tenants: list[uuid.UUID], known_scopes: list[CacheScope], total: int, seed: int
) -> list[tuple[Any, ...]]:
    """COPY rows: random filler in each tenant's own scopes and beside every known entry."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    specs: list[tuple[uuid.UUID, str, str, str]] = []
    for scope in known_scopes:
        for n in range(FILLER_PER_KNOWN_SCOPE):
            specs.append((scope.tenant_id, scope.scope_key(), scope.canonical_json(), f"f{n}"))
    remaining = max(0, total - len(specs))
    for n in range(remaining):
        tenant_id = tenants[n % len(tenants)]
        scope = _scope(tenant_id, 1000 + (n // len(tenants)) % SCOPES_PER_TENANT)
        specs.append((tenant_id, scope.scope_key(), scope.canonical_json(), f"q{n}"))
    vectors = _unit_vectors(rng, len(specs))
    rows = []
    for i, (tenant_id, key, scope_json, tag) in enumerate(specs):
        expired = i % 10 == 9
        rows.append(
            (
                tenant_id,
                "channel_performance",
                key,
                scope_json,
                f"filler question {tag}",
                vectors[i],
                MODEL_ID,
                384,
                '{"summary": "filler"}',
                "[]",
                "openai/gpt-4o-mini",
                "explain-v1",
                FINGERPRINT,
                Decimal("0.25"),
                now - timedelta(days=1) if expired else now + timedelta(days=7),
            )
        )
    return rows


async def _create_tenants(owner: asyncpg.Connection, count: int) -> list[uuid.UUID]:
    """Insert `count` tenants as the owner, each with its tenant set."""
    tenants = [uuid.uuid4() for _ in range(count)]
    async with owner.transaction():
        for i, tenant_id in enumerate(tenants):
            await set_tenant(owner, tenant_id)
            await owner.execute(
                "INSERT INTO tenants (id, name, api_key_hash) VALUES ($1, $2, $3)",
                tenant_id,
                f"bench-tenant-{i}",
                hashlib.sha256(tenant_id.bytes).hexdigest(),
            )
    return tenants


async def _store_known(
    pool: asyncpg.Pool,
    embedder: LocalEmbedder,
    tenants: list[uuid.UUID],
    accepted: list[tuple[str, str]],
    questions: list[str],
) -> tuple[list[Known], int]:
    """One known entry per tenant beside every unlike labelled question; entries and row count."""
    # Every tenant asks the same labelled questions, each in its own words (the vector plus a
    # little noise, cosine about 0.97), so each question is stored by most tenants: the crowd an
    # approximate search must get through.
    rng = np.random.default_rng(5)
    by_question: dict[str, list[str]] = {}
    for a, b in accepted:
        by_question.setdefault(a, []).append(b)
    stored_questions = sorted(by_question)
    texts = sorted(set(questions) | set(stored_questions))
    vectors = dict(zip(texts, embedder.embed([normalise_question(t) for t in texts]), strict=True))
    known = []
    rows = 0
    for i, tenant_id in enumerate(tenants):
        scope = _scope(tenant_id, i)
        question = stored_questions[i % len(stored_questions)]
        # Beside it: every labelled question unlike it and its paraphrases.
        near = [vectors[question], *(vectors[p] for p in by_question[question])]
        others = [
            q
            for q in questions
            if max(float(np.dot(vectors[q], v)) for v in near) < DISTRACTOR_MAX_SIMILARITY
        ]
        async with tenant_transaction(pool, tenant_id) as conn:
            for text in [*others, question]:
                vector = np.asarray(vectors[text], dtype=np.float32)
                if text != question:
                    vector = vector + rng.normal(0.0, CROWD_NOISE, vector.shape).astype(np.float32)
                    vector /= np.linalg.norm(vector)
                entry = await store.store(
                    conn,
                    scope,
                    question=text,
                    question_embedding=vector.tolist(),
                    embedding_model=MODEL_ID,
                    fingerprint=FINGERPRINT,
                    explanation={"summary": f"answer to {text}"},
                    citations=[{"query": "channel_performance"}],
                    cost_cents=Decimal("0.0375"),
                    ttl_seconds=7 * 86400,
                )
                rows += 1
        known.append(Known(entry, scope, question, tuple(by_question[question])))
    return known, rows


async def _lookup(
    pool: asyncpg.Pool, embedder: LocalEmbedder, scope: CacheScope, question: str
) -> tuple[CacheHit | None, float, float]:
    """Embed and look up one question; the hit, the embedding time and the database time."""
    t0 = time.perf_counter()
    vector = (await embedder.aembed([normalise_question(question)]))[0]
    t1 = time.perf_counter()
    async with tenant_transaction(pool, scope.tenant_id, readonly=True) as conn:
        hit = await store.lookup(
            conn,
            scope,
            fingerprint=FINGERPRINT,
            question=question,
            question_embedding=vector,
            embedding_model=MODEL_ID,
        )
    return hit, t1 - t0, time.perf_counter() - t1


async def _naive_hnsw(
    pool: asyncpg.Pool, entry: Known, vector: list[float], *, iterative: bool
) -> bool:
    """Whether `ORDER BY distance LIMIT 1` through the HNSW index finds the entry."""
    async with tenant_transaction(pool, entry.scope.tenant_id, readonly=True) as conn:
        # What a query without the fence may do: walk HNSW and filter afterwards.
        await conn.execute("SET LOCAL enable_sort = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        if iterative:
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        found = await conn.fetchval(
            NAIVE_HNSW_SQL,
            entry.scope.tenant_id,
            entry.scope.scope_key(),
            MODEL_ID,
            FINGERPRINT,
            vector,
        )
    return bool(found == entry.entry_id)


async def _recall(
    pool: asyncpg.Pool, embedder: LocalEmbedder, known: list[Known]
) -> dict[str, tuple[int, int]]:
    """Hits of the right entry: the store's lookup, and plain HNSW queries for contrast."""
    counts = {
        "exact question": [0, 0],
        "accepted paraphrase": [0, 0],
        "HNSW, exact question": [0, 0],
        "HNSW, paraphrase": [0, 0],
        "HNSW iterative, exact question": [0, 0],
        "HNSW iterative, paraphrase": [0, 0],
    }

    def count(name: str, ok: bool) -> None:
        """Tally one outcome."""
        counts[name][0] += ok
        counts[name][1] += 1

    for entry in known:
        for kind, text in [
            ("exact question", entry.question),
            *(("paraphrase", p) for p in entry.paraphrases),
        ]:
            hit, _, _ = await _lookup(pool, embedder, entry.scope, text)
            name = "exact question" if kind == "exact question" else "accepted paraphrase"
            count(name, hit is not None and hit.entry_id == entry.entry_id)
            vector = embedder.embed_one(normalise_question(text))
            count(f"HNSW, {kind}", await _naive_hnsw(pool, entry, vector, iterative=False))
            count(f"HNSW iterative, {kind}", await _naive_hnsw(pool, entry, vector, iterative=True))
    return {name: (found, of) for name, (found, of) in counts.items()}


async def _latency(
    pool: asyncpg.Pool,
    embedder: LocalEmbedder,
    requests: list[Request],
    clients: int,
    counter: HitCounter,
) -> tuple[list[float], list[float], list[float], float, int, int]:
    """Run `requests` over `clients` concurrent clients; per-request timings and outcomes."""
    total: list[float] = []
    embed: list[float] = []
    database: list[float] = []
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    hits = wrong = 0

    async def client() -> None:
        """Take requests off the queue until it is empty."""
        nonlocal hits, wrong
        while not queue.empty():
            request = queue.get_nowait()
            started = time.perf_counter()
            hit, t_embed, t_db = await _lookup(pool, embedder, request.scope, request.question)
            total.append(time.perf_counter() - started)
            embed.append(t_embed)
            database.append(t_db)
            if hit is not None:
                hits += 1
                counter.record_hit(hit)
                wrong += hit.entry_id != request.expected
            else:
                wrong += request.expected is not None

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return total, embed, database, time.perf_counter() - started, hits, wrong


def _requests(known: list[Known], tenants: list[uuid.UUID], count: int) -> list[Request]:
    """40% exact questions, 40% paraphrases, 20% misses (other scopes and unseen questions)."""
    rng = random.Random(11)
    out = []
    for i in range(count):
        entry = rng.choice(known)
        kind = i % 5
        if kind in (0, 1):
            out.append(Request(entry.scope, entry.question, entry.entry_id))
        elif kind in (2, 3):
            out.append(Request(entry.scope, rng.choice(entry.paraphrases), entry.entry_id))
        else:
            scope = _scope(rng.choice(tenants), 1000 + rng.randrange(SCOPES_PER_TENANT))
            out.append(Request(scope, "How many dead events are pending?", None))
    return out


async def _run(args: argparse.Namespace) -> None:
    """Set up the database, load it, measure, print."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    server = start_embedded(data_dir, cleanup="delete")
    try:
        owner_url = embedded_url(server)
        migrate.upgrade(owner_url)
        urls = resolve_urls(Settings(), owner_url)
        embedder = get_local_embedder()
        accepted, questions = _accepted_pairs(embedder)

        owner = await asyncpg.connect(owner_url)
        await register_vector(owner)
        versions = await owner.fetchrow(
            "SELECT current_setting('server_version') AS pg, "
            "(SELECT extversion FROM pg_extension WHERE extname = 'vector') AS vector"
        )
        tenants = await _create_tenants(owner, args.tenants)
        pool = await create_pool(urls.app, application_name="bench-cache", max_size=args.clients)
        # Load without the HNSW index, then build it (much faster than inserting into it).
        index_def = await owner.fetchval(
            "SELECT pg_get_indexdef('idx_explanation_cache_embedding_local'::regclass)"
        )
        await owner.execute("DROP INDEX idx_explanation_cache_embedding_local")
        known, known_rows = await _store_known(pool, embedder, tenants, accepted, questions)
        rows = _filler_rows(tenants, [k.scope for k in known], args.entries - known_rows, seed=3)
        t0 = time.perf_counter()
        for start in range(0, len(rows), COPY_CHUNK):
            await owner.copy_records_to_table(
                "explanation_cache", records=rows[start : start + COPY_CHUNK], columns=COLUMNS
            )
        copy_s = time.perf_counter() - t0
        del rows
        t0 = time.perf_counter()
        await owner.execute("SET maintenance_work_mem = '1GB'")
        await owner.execute(index_def)
        hnsw_s = time.perf_counter() - t0
        await owner.execute("ANALYZE explanation_cache")
        count = await owner.fetchval("SELECT count(*) FROM explanation_cache")
        expired = await owner.fetchval(
            "SELECT count(*) FROM explanation_cache WHERE expires_at <= now()"
        )

        print(f"PostgreSQL {versions['pg']}, pgvector {versions['vector']}, model {MODEL_ID}")
        print(
            f"entries: {count:,} across {len(tenants)} tenants ({expired:,} expired); "
            f"{len(known)} known entries; {known_rows:,} entries with real embeddings of "
            f"labelled questions, each question stored by many tenants; "
            f"{FILLER_PER_KNOWN_SCOPE} random entries beside each known one"
        )
        print(f"load: COPY {copy_s:.1f} s, HNSW index build {hnsw_s:.1f} s")
        print(
            f"threshold {DEFAULT_SIMILARITY_THRESHOLD}: {len(accepted)} labelled "
            "paraphrase pairs accepted (similarity and matcher)"
        )

        # Warm up: pool connections, prepared statements, the model.
        warm = _requests(known, tenants, 100)
        await _latency(pool, embedder, warm, args.clients, HitCounter())

        counter = HitCounter()
        requests = _requests(known, tenants, args.requests)
        for clients in (args.clients, 1):
            batch = requests if clients == args.clients else requests[: args.requests // 8]
            total, embed, database, wall, hits, wrong = await _latency(
                pool, embedder, batch, clients, counter if clients == args.clients else HitCounter()
            )
            print(
                f"\nlookups: {len(batch)} by {clients} concurrent client(s) in {wall:.1f} s "
                f"({len(batch) / wall:.0f}/s); {hits} hits, {wrong} wrong outcomes"
            )
            print(f"  whole lookup (embed + query): {_ms(total)}")
            print(f"  embedding the question:       {_ms(embed)}")
            print(f"  database (transaction+query): {_ms(database)}")
            print(f"  mean: {statistics.fmean(total) * 1000:.2f} ms")

        recall = await _recall(pool, embedder, known)
        print(
            "\nrecall (the right entry found; HNSW rows: plain ORDER BY <=> LIMIT 1 for contrast):"
        )
        for name, (found, of) in recall.items():
            print(f"  {name:<32} {found}/{of} = {100 * found / of:.1f}%")

        entries = counter.pending_entries
        t0 = time.perf_counter()
        written = await counter.flush(pool)
        print(
            f"\nhit counter flush: {written} hits on {entries} entries of "
            f"{len({r.scope.tenant_id for r in requests})} tenants in "
            f"{(time.perf_counter() - t0) * 1000:.0f} ms"
        )
        async with pool.acquire() as conn:
            t0 = time.perf_counter()
            purged = await store.purge_expired(conn, batch_size=1000)
            print(
                f"purge_expired: {purged:,} entries in {(time.perf_counter() - t0) * 1000:.0f} ms "
                "(batches of 1000)"
            )
        await pool.close()
        await owner.close()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options (defaults: 100,000 entries, 200 tenants, 20 clients) and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=4000)
    asyncio.run(_run(parser.parse_args(list(argv or []))))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
