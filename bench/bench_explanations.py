"""POST /v1/explanations over real HTTP: the cache-hit path under load, and the miss path's cost.

Run from the repository root: `python -m bench.bench_explanations [--seconds N --clients N ...]`.

An embedded PostgreSQL is started in a temporary directory (deleted afterwards) and migrated.
A few tenants get demo attribution data (so fingerprints scan real rows); with the others they
make 200 tenants. The REAL service (`llm-service serve`, uvicorn, one process, workers off) is
started in a subprocess with the local embedding model and `openai/gpt-4o-mini` pointed at a
local stub server (`LLM_API_BASE`) that answers every chat completion at once.

1. Filler: explanation_cache is filled (COPY, HNSW index built afterwards) to 100,000 entries in
   all: random filler in every tenant's own scopes (bench_cache's filler) and, beside every
   known entry (step 2), 20 entries of the same scope and fingerprint with random questions, so
   similarity lookups rank a crowd.
2. Misses: each known scope (subject x channel/metric x week, with and without a question) is
   requested once; the stub answers instantly, so these figures are the miss path's own
   overhead (data queries, ledger writes, litellm, store). What they store are the known entries.
3. Hits: 20 keep-alive clients (`bench.http_load`: asyncio streams, request bytes built once,
   about 0.15 ms of client CPU per request) request known scopes: without free text, with the
   stored question, and with a paraphrase that the question matcher accepts. Every service
   under test (`--before ROOT`: another code tree, e.g. a worktree of main, one process;
   `--workers 1,2`: this tree with 1 and with 2 serve processes) runs against the same database;
   `--rounds` closed-loop rounds of `--seconds` each are interleaved (the order rotates each
   round), so a busy neighbour on a shared machine disturbs every service alike. Then a steady
   --rate requests/s and one client, per service.

Reported per service: hits/s (median of rounds), client-side and server-side latency (the
route's X-Server-Time-Ms header: from before authentication to the serialised response), its
phases (Server-Timing), recall, errors, and the cores used by the clients (this process), the
service's process tree, PostgreSQL's and everything else on the machine (other sessions), as
CPU per hit. Target: >= 1,000 hits/s with server p95 <= 25 ms at 20 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
from pgvector.asyncpg import register_vector

from bench.bench_cache import (
    COLUMNS,
    COPY_CHUNK,
    FINGERPRINT,
    _accepted_pairs,
    _create_tenants,
    _filler_rows,
)
from bench.harness import ROOT, free_port, line, pct, serve_stub, start, stop, stub_app, wait_http
from bench.http_load import CpuMeter, LoadResults, format_shares, hammer, request_bytes
from bench.investigation_provider import _completion, honest_prompt_tokens
from cache.embedding_local import MODEL_ID, get_local_embedder
from llm_service.db import migrate
from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.demo_data import generate_demo_data
from llm_service.tenants.service import create_tenant

MODEL = "openai/gpt-4o-mini"
CROWD_PER_ENTRY = 20


# -- the provider stub ----------------------------------------------------------------------------

EXPLANATION = json.dumps(
    {
        "summary": "Revenue moved mostly on facebook_paid (stub answer).",
        "drivers": [{"label": "facebook_paid", "figure": "-1,234.56", "detail": "stub"}],
        "confidence": "medium",
    }
)


def explanation_completion(body: dict[str, Any], _size: int) -> dict[str, Any]:
    """A chat completion holding a valid explanation (its prompt's tokens as an honest provider
    reports them, 90 completion tokens)."""
    return _completion({"content": EXPLANATION}, honest_prompt_tokens(body), 90)


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request: whose, what, and whether it should hit."""

    api_key: str
    body: dict[str, Any]


@dataclass
class Results:
    """What a run measured."""

    client_s: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cache: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: int = 0
    wall_s: float = 0.0

    def record(self, response: httpx.Response, elapsed: float) -> None:
        """Record one response."""
        self.client_s.append(elapsed)
        if response.status_code != 200:
            self.errors += 1
            return
        answer = response.json()
        self.cache["degraded" if answer["degraded"] else answer["cache"]] += 1
        self.server_ms.append(float(response.headers["x-server-time-ms"]))
        for item in response.headers.get("server-timing", "").split(","):
            name, _, duration = item.strip().partition(";dur=")
            if duration:
                self.phases[name].append(float(duration))


def _report(title: str, results: Results) -> None:
    """Print a run's figures."""
    n = len(results.client_s)
    print(f"\n{title}: {n} requests in {results.wall_s:.1f} s = {n / results.wall_s:.0f}/s")
    print(f"  results: {dict(results.cache)}; errors {results.errors} ({results.errors / n:.2%})")
    print(f"  client-side:  {line(results.client_s, 1000.0)}")
    print(f"  server-side:  {line(results.server_ms)}")
    for name, values in results.phases.items():
        if name != "total":
            print(f"    {name:<12}{line(values)}  (in {len(values)} requests)")


async def _sequence(base_url: str, calls: list[Call]) -> Results:
    """Each call once, one after the other."""
    results = Results()
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        started = time.perf_counter()
        for call in calls:
            t0 = time.perf_counter()
            response = await http.post(
                "/v1/explanations",
                json=call.body,
                headers={"Authorization": f"Bearer {call.api_key}"},
            )
            results.record(response, time.perf_counter() - t0)
        results.wall_s = time.perf_counter() - started
    return results


def _weeks(today: date, count: int) -> list[dict[str, str]]:
    """The last `count` full weeks (Monday to Monday) as absolute ranges."""
    monday = today - timedelta(days=today.weekday())
    return [
        {
            "start": (monday - timedelta(weeks=n)).isoformat(),
            "end": (monday - timedelta(weeks=n - 1)).isoformat(),
        }
        for n in range(1, count + 1)
    ]


_VARIANTS: list[dict[str, Any]] = [
    {"subject": "channel_performance"},
    {"subject": "channel_performance", "channel": "google_search_paid", "metric": "revenue"},
    {"subject": "period_change", "channel": "facebook_paid", "metric": "revenue"},
    {"subject": "period_change", "metric": "conversions"},
    {"subject": "attribution_model_disagreement"},
    {"subject": "revenue_reconciliation"},
]


def _known_calls(
    keys: list[str], weeks: list[dict[str, str]], pairs: list[tuple[str, str]]
) -> tuple[list[Call], list[Call]]:
    """(the calls that store the known entries, the calls that should hit them)."""
    store: list[Call] = []
    hits: list[Call] = []
    n = 0
    for key in keys:
        for variant in _VARIANTS:
            for period in weeks:
                asked, paraphrase = pairs[n % len(pairs)]
                n += 1
                plain = {**variant, "period": period}
                store += [Call(key, plain), Call(key, {**plain, "question": asked})]
                hits += [
                    Call(key, plain),
                    Call(key, {**plain, "question": asked}),
                    Call(key, {**plain, "question": paraphrase}),
                ]
    return store, hits


# -- the database ---------------------------------------------------------------------------


async def _crowd(owner: asyncpg.Connection, tenants: list[uuid.UUID], seed: int) -> int:
    """Beside every known entry, CROWD_PER_ENTRY more of its scope and data (random questions)."""
    rows = await owner.fetch(
        "SELECT tenant_id, entity_type, scope_key, scope::text AS scope, data_fingerprint, "
        "prompt_version FROM explanation_cache WHERE question <> '' AND tenant_id = ANY($1) "
        "AND data_fingerprint <> $2",
        tenants,
        FINGERPRINT,
    )
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    records = []
    for row in rows:
        vectors = rng.standard_normal((CROWD_PER_ENTRY, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for i in range(CROWD_PER_ENTRY):
            records.append(
                (
                    row["tenant_id"],
                    row["entity_type"],
                    row["scope_key"],
                    row["scope"],
                    f"crowd question {i} {uuid.uuid4().hex[:6]}",
                    vectors[i],
                    MODEL_ID,
                    384,
                    '{"summary": "crowd", "drivers": [], "confidence": "low"}',
                    "[]",
                    MODEL,
                    row["prompt_version"],
                    row["data_fingerprint"],
                    Decimal("0.1"),
                    now + timedelta(days=1),
                )
            )
    await owner.copy_records_to_table("explanation_cache", records=records, columns=COLUMNS)
    return len(records)


async def _load(owner_url: str, args: argparse.Namespace) -> list[tuple[uuid.UUID, str]]:
    """Tenants with demo data: their ids and API keys."""
    pool = await create_pool(owner_url, application_name="bench-explanations-owner", max_size=4)
    keys = []
    try:
        t0 = time.perf_counter()
        for i in range(args.data_tenants):
            created = await create_tenant(pool, f"bench-data-tenant-{i}")
            async with tenant_transaction(pool, created.tenant_id) as conn:
                await generate_demo_data(conn, created.tenant_id, events=args.events, seed=100 + i)
            keys.append((created.tenant_id, created.api_key))
        print(
            f"demo data: {args.data_tenants} tenants x {args.events:,} events over 90 days "
            f"in {time.perf_counter() - t0:.0f} s"
        )
    finally:
        await pool.close()
    return keys


async def _fill(owner_url: str, total: int, tenants: int) -> tuple[int, str]:
    """Filler entries of many tenants (COPY, without the HNSW index); returns rows and index."""
    owner = await asyncpg.connect(owner_url)
    await register_vector(owner)
    try:
        ids = [r["id"] for r in await owner.fetch("SELECT id FROM tenants")]
        ids += await _create_tenants(owner, max(0, tenants - len(ids)))
        index_def: str = await owner.fetchval(
            "SELECT pg_get_indexdef('idx_explanation_cache_embedding_local'::regclass)"
        )
        await owner.execute("DROP INDEX idx_explanation_cache_embedding_local")
        rows = _filler_rows(ids, [], total, seed=3)
        for start in range(0, len(rows), COPY_CHUNK):
            await owner.copy_records_to_table(
                "explanation_cache", records=rows[start : start + COPY_CHUNK], columns=COLUMNS
            )
        return len(rows), index_def
    finally:
        await owner.close()


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One service under test: a code tree, a number of serve processes, its port and process."""

    label: str
    root: Path
    workers: int
    port: int
    process: subprocess.Popen[bytes]


def _variants(args: argparse.Namespace) -> list[tuple[str, Path, int]]:
    """(label, code tree, serve processes) of each service to compare."""
    out: list[tuple[str, Path, int]] = []
    if args.before:
        out.append(("before, 1 process", Path(args.before).resolve(), 1))
    for labelled in args.tree:
        label, _, tree = labelled.partition("=")
        out.append((f"{label}, 1 process", Path(tree).resolve(), 1))
    for workers in args.workers:
        out.append((f"after, {workers} process{'es' if workers > 1 else ''}", ROOT, workers))
    return out


def _start_serve(
    root: Path, workers: int, port: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """`llm-service serve` of the code in `root` (its own tree first on the path)."""
    cli = [sys.executable, "-m", "llm_service.cli", "serve", "--no-migrate", "--port", str(port)]
    handle = log.open("wb")
    return subprocess.Popen(
        [*cli, "--workers", str(workers)],
        env={**env, "PYTHONPATH": str(root)},
        cwd=root,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _postmaster_pid(data_dir: Path) -> int:
    """The embedded server's postmaster (the root of PostgreSQL's process tree)."""
    for found in data_dir.rglob("postmaster.pid"):
        return int(found.read_text().split()[0])
    raise RuntimeError(f"no postmaster.pid under {data_dir}")


def _report_round_set(label: str, rounds: list[tuple[LoadResults, dict[str, float]]]) -> None:
    """A variant's closed-loop rounds: median rate, pooled latencies, CPU shares."""
    pooled = LoadResults()
    for results, _ in rounds:
        pooled.client_s += results.client_s
        pooled.server_ms += results.server_ms
        pooled.errors += results.errors
        pooled.wall_s += results.wall_s
        for name, count in results.cache.items():
            pooled.cache[name] += count
        for name, values in results.phases.items():
            pooled.phases[name] += values
    rates = [results.rate() for results, _ in rounds]
    share = {k: statistics.median(s[k] for _, s in rounds) for k in rounds[0][1]}
    rate = statistics.median(rates)
    print(
        f"\n{label}: {rate:.0f} hits/s (median of rounds: {', '.join(f'{r:.0f}' for r in rates)})"
    )
    n = len(pooled.client_s)
    print(f"  results: {dict(pooled.cache)}; errors {pooled.errors} ({pooled.errors / n:.2%})")
    print(f"  client-side:  {line(pooled.client_s, 1000.0)}")
    print(f"  server-side:  {line(pooled.server_ms)}")
    for name, values in pooled.phases.items():
        if name != "total":
            print(f"    {name:<12}{line(values)}  (in {len(values)} requests)")
    print(f"  cores used (medians): {format_shares(share)}")
    print(
        f"  CPU per hit: serve {share['serve'] / rate * 1000:.2f} ms, PostgreSQL "
        f"{share['postgres'] / rate * 1000:.2f} ms, client {share['client'] / rate * 1000:.2f} ms; "
        f"client share of our CPU "
        f"{share['client'] / (share['client'] + share['serve'] + share['postgres']):.0%}"
    )
    s95, c95 = pct(pooled.server_ms, 95), pct(pooled.client_s, 95) * 1000
    met = rate >= 1000 and s95 <= 25
    print(
        f"  target (>= 1,000 hits/s, server p95 <= 25 ms): {'met' if met else 'NOT met'} "
        f"({rate:.0f}/s, p95 {s95:.2f} ms; client p95 {c95:.2f} ms)"
    )


def _report_load(title: str, results: LoadResults) -> None:
    """Print one load run's figures."""
    n = len(results.client_s)
    print(f"\n{title}: {n} requests in {results.wall_s:.1f} s = {results.rate():.0f}/s")
    print(f"  results: {dict(results.cache)}; errors {results.errors}")
    print(f"  client-side:  {line(results.client_s, 1000.0)}")
    print(f"  server-side:  {line(results.server_ms)}")
    for name, values in results.phases.items():
        if name != "total":
            print(f"    {name:<12}{line(values)}")


async def _run(args: argparse.Namespace) -> None:
    """Set up, measure, print, tear down."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-explanations-"))
    server = start_embedded(data_dir, cleanup="delete")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        owner_url = embedded_url(server)
        migrate.upgrade(owner_url)
        data_tenants = await _load(owner_url, args)
        keys = [key for _, key in data_tenants]
        pairs, _ = _accepted_pairs(get_local_embedder())
        today = datetime.now(UTC).date()
        store_calls, hit_calls = _known_calls(keys, _weeks(today, args.weeks), pairs)
        planned = len(store_calls) + CROWD_PER_ENTRY * len(store_calls) // 2
        t0 = time.perf_counter()
        filler, index_def = await _fill(owner_url, args.entries - planned, args.tenants)
        print(
            f"filler: {filler:,} entries across {args.tenants} tenants in "
            f"{time.perf_counter() - t0:.0f} s"
        )

        stub_port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": owner_url,
            "LLM_MODEL": MODEL,
            "LLM_API_BASE": f"http://127.0.0.1:{stub_port}/v1",
            "OPENAI_API_KEY": "sk-bench",
            "EMBEDDING_MODEL": "local",
            "WORKERS_IN_PROCESS": "0",
            "DB_POOL_MAX_SIZE": str(args.pool),
            "LLM_SERVICE_DATA_DIR": str(data_dir),
            "PYTHONPATH": str(ROOT),
        }
        stub_log = data_dir / "stub.log"
        processes.append(
            start(
                [sys.executable, "-m", "bench.bench_explanations", "--stub", str(stub_port)],
                env,
                stub_log,
            )
        )
        variants: list[Variant] = []
        for n, (label, root, workers) in enumerate(_variants(args)):
            port, log = free_port(), data_dir / f"service-{n}.log"
            process = _start_serve(root, workers, port, env, log)
            processes.append(process)
            variants.append(Variant(label, root, workers, port, process))
            await wait_http(f"http://127.0.0.1:{port}/healthz", process, log)
        await wait_http(f"http://127.0.0.1:{stub_port}/health", processes[0], stub_log)

        # Each code tree stores its own entries (a fingerprint's definition may differ).
        misses: dict[Path, Results] = {}
        for variant in variants:
            if variant.root not in misses:
                misses[variant.root] = await _sequence(
                    f"http://127.0.0.1:{variant.port}", store_calls
                )
        owner = await asyncpg.connect(owner_url)
        await register_vector(owner)
        try:
            crowd = await _crowd(owner, [t for t, _ in data_tenants], seed=5)
            t0 = time.perf_counter()
            await owner.execute("SET maintenance_work_mem = '1GB'")
            await owner.execute(index_def)
            await owner.execute("ANALYZE")
            total = await owner.fetchval("SELECT count(*) FROM explanation_cache")
            versions = await owner.fetchrow(
                "SELECT current_setting('server_version') AS pg, "
                "(SELECT extversion FROM pg_extension WHERE extname = 'vector') AS vector"
            )
        finally:
            await owner.close()
        print(
            f"crowd: {crowd:,} entries beside the known ones; HNSW build "
            f"{time.perf_counter() - t0:.0f} s; explanation_cache holds {total:,} entries"
        )
        print(
            f"PostgreSQL {versions['pg']}, pgvector {versions['vector']}, {os.cpu_count()} CPUs; "
            f"pool {args.pool} per process; {args.clients} clients (asyncio streams, keep-alive, "
            f"request bytes built once); services: {', '.join(v.label for v in variants)}"
        )
        print(
            f"known scopes: {len(store_calls) // 2} ({len(keys)} tenants x {len(_VARIANTS)} "
            f"subjects/filters x {args.weeks} weeks); {len(hit_calls)} distinct hit requests "
            f"(no question / stored question / accepted paraphrase)"
        )
        for variant in variants:
            if variant.root in misses:  # the entries of each code tree were stored once
                _report(
                    f"MISS path, {variant.label} (provider stub answers at once)",
                    misses.pop(variant.root),
                )

        host = "127.0.0.1"
        requests = [
            request_bytes(
                host, "/v1/explanations", call.body, {"Authorization": f"Bearer {call.api_key}"}
            )
            for call in hit_calls
        ]
        postgres = _postmaster_pid(data_dir)
        for variant in variants:  # warm: connections, the question LRU, plans
            await hammer(host, variant.port, requests, args.clients, 3.0)
        print(f"\nuptime before the rounds: {_uptime()}")
        rounds: dict[str, list[tuple[LoadResults, dict[str, float]]]] = defaultdict(list)
        for r in range(args.rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for variant in order:
                meter = CpuMeter({"serve": variant.process.pid, "postgres": postgres})
                before = meter.sample()
                results = await hammer(host, variant.port, requests, args.clients, args.seconds)
                shares = CpuMeter.shares(before, meter.sample())
                rounds[variant.label].append((results, shares))
                print(
                    f"  round {r + 1}, {variant.label}: {results.rate():.0f}/s, server p95 "
                    f"{pct(results.server_ms, 95):.2f} ms; {format_shares(shares)}"
                )
        print(f"uptime after the rounds: {_uptime()}")
        for variant in variants:
            _report_round_set(
                f"HITS, {variant.label}, {args.clients} clients, {args.rounds} x "
                f"{args.seconds:g} s closed loop",
                rounds[variant.label],
            )
        for variant in variants:
            paced = await hammer(
                host, variant.port, requests, args.clients, args.seconds / 2, args.rate
            )
            _report_load(f"HITS, {variant.label}, paced at {args.rate:g} requests/s", paced)
            single = await hammer(host, variant.port, requests, 1, args.seconds / 2)
            _report_load(f"HITS, {variant.label}, one client (unloaded)", single)

        last = variants[-1]
        fresh_calls = [
            Call(c.api_key, {**c.body, "question": "Which single day had the most events?"})
            for c in store_calls[: args.sequential // 2]
            if "question" in c.body
        ]
        fresh = await _sequence(f"http://127.0.0.1:{last.port}", fresh_calls)
        _report(f"MISS path again, warm, {last.label} (new questions in known scopes)", fresh)
    finally:
        for process in reversed(processes):
            stop(process)
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def _uptime() -> str:
    """The load averages (1, 5, 15 min)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options (see --help) and run; `--stub PORT` serves the provider stub only."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=100_000, help="filler cache entries")
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--data-tenants", type=int, default=4, help="tenants with demo data")
    parser.add_argument("--events", type=int, default=50_000, help="demo events per tenant")
    parser.add_argument("--weeks", type=int, default=4, help="weeks of known scopes")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0, help="per closed-loop round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per service")
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="serve processes of this tree's service, e.g. 1,2 (one service each)",
    )
    parser.add_argument("--before", help="another code tree to compare (e.g. a main worktree)")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="one more code tree to compare, under its label (repeatable)",
    )
    parser.add_argument("--sequential", type=int, default=400)
    parser.add_argument("--rate", type=float, default=250.0, help="requests/s of the paced run")
    parser.add_argument("--pool", type=int, default=10, help="the service's DB pool size")
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv or []))
    if args.stub:
        serve_stub(stub_app(explanation_completion), args.stub)
        return
    asyncio.run(_run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
