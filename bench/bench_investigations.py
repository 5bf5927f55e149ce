"""Many investigations in flight on ONE worker against a slow mocked provider (figures only).

Run from the repository root:
`python -m bench.bench_investigations [--runs 200 --latency-ms 300 --concurrency 200 ...]`.

An embedded PostgreSQL is started in a temporary directory (deleted afterwards) and migrated;
`--tenants` tenants get demo data (`generate_demo_data`, as the owner) and `--runs` investigations
are queued across them with the default limits ($0.30, 60 s, 12 steps). One `Worker` then claims
and runs them all, `--concurrency` at a time, through the real agent loop, gateway, ledger, tools
(real analytics queries under row-level security) and event log. Only OpenAI is mocked (respx):
every call sleeps `--latency-ms`, then answers from the conversation: two or three steps of tool
calls with realistic arguments, then a final JSON report citing the evidence ids it was shown,
with usage that grows with the conversation (prompt = request characters / 4).

Reported: wall time and throughput; per-run elapsed against the 60 s limit; the service's own
time per step (everything that is not the provider's latency), broken into phases; pool waits;
terminal statuses, spend against the $0.30 ceiling, runs over budget or over time (printed, never
raised); process CPU and peak RSS, PostgreSQL's CPU; event-loop lag; and after the run the
ledger's reconciliation and the absence of pending ledger rows. The machine's total CPU use is
printed too: other processes running at the same time make every figure worse, and say so.

`--profile N` prints cProfile's top N functions of the event-loop thread during the runs. The
`--what-if-*` options change the service's behaviour from the outside (monkeypatching) to measure
a proposed fix; they are off by default and marked in the output.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import respx

import llm_service.investigations.agent as agent_module
import llm_service.investigations.evidence as evidence_module
import llm_service.llm.prompt_memo as memo_module
import llm_service.workers.worker as worker_module
from bench.investigation_figures import (
    _CALL,
    _RUN,
    MAX_COST_CENTS,
    TIMEOUT_MS,
    Patches,
    Probe,
    _machine_busy_s,
    _postgres_cpu_s,
    _rss_now_mib,
    _uptime,
)
from bench.investigation_provider import OPENAI_URL, QUESTIONS, SCRIPTS, make_provider
from bench.investigation_report import _report
from llm_service.db import migrate
from llm_service.db import pool as pool_module
from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import resolve_urls
from llm_service.demo_data import generate_demo_data
from llm_service.investigations import repository
from llm_service.investigations.events import EventSink
from llm_service.investigations.evidence import EvidenceLog
from llm_service.investigations.service import DEFAULT_MAX_STEPS
from llm_service.jobs import repository as jobs_repository
from llm_service.llm.litellm_setup import load_litellm
from llm_service.llm.pricing import gateway_from_settings
from llm_service.llm.prompt_memo import PromptMemo
from llm_service.settings import Settings
from llm_service.tenants.service import create_tenant
from llm_service.workers.pool_size import read_budget, worker_pool_size
from llm_service.workers.worker import Claim, Worker

T = TypeVar("T")

# -- what-if experiments (not what the service does) ---------------------------------------------


async def _no_reset(conn: asyncpg.Connection) -> None:
    """No reset query on release (the service only ever sets transaction-local settings)."""


# -- set-up --------------------------------------------------------------------------------------


async def _make_tenants(owner_pool: asyncpg.Pool, count: int, events: int) -> list[UUID]:
    """Tenants with demo data, two at a time (one per owner connection)."""
    tenants = [
        (await create_tenant(owner_pool, f"bench-tenant-{i}")).tenant_id for i in range(count)
    ]
    gate = asyncio.Semaphore(2)

    async def fill(i: int, tenant_id: UUID) -> None:
        async with gate, tenant_transaction(owner_pool, tenant_id) as conn:
            await generate_demo_data(conn, tenant_id, events=events, seed=i + 1)

    await asyncio.gather(*(fill(i, t) for i, t in enumerate(tenants)))
    async with owner_pool.acquire() as conn:
        await conn.execute("ANALYZE")
    return tenants


async def _queue(app_pool: asyncpg.Pool, tenants: list[UUID], runs: int) -> list[UUID]:
    ids: list[UUID] = []
    for i in range(runs):
        tenant = tenants[i % len(tenants)]
        values = {
            "tenant_id": tenant,
            "question": QUESTIONS[i % len(QUESTIONS)],
            "max_cost_cents": MAX_COST_CENTS,
            "timeout_ms": TIMEOUT_MS,
            "max_steps": DEFAULT_MAX_STEPS,
        }
        async with tenant_transaction(app_pool, tenant) as conn:
            row = await jobs_repository.insert_run(conn, repository.TABLE, values, None, "id")
        ids.append(row["id"])
    return ids


async def _run(args: argparse.Namespace) -> None:
    rss_start = _rss_now_mib()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    # respx intercepts httpx only: the gateway's transport setting, where it has one.
    os.environ.setdefault("LLM_HTTP_TRANSPORT", "httpx")
    t0 = time.perf_counter()
    litellm = load_litellm()
    print(f"import litellm (offline set-up): {(time.perf_counter() - t0) * 1000:.0f} ms")

    t0 = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-investigations-"))
    server = start_embedded(data_dir, cleanup="delete")
    try:
        owner = embedded_url(server)
        migrate.upgrade(owner)
        base = Settings(
            llm_model="openai/gpt-4o-mini",
            llm_api_base=None,
            llm_http_transport="httpx",  # OpenAI is mocked with respx
            worker_pool_size=args.pool_size,
        )
        urls = resolve_urls(base, owner)
        # Sized as `llm-service worker` sizes its pool (WORKER_POOL_SIZE, else one connection
        # per run in flight), within what the server's max_connections leaves.
        probe_conn = await asyncpg.connect(urls.app)
        try:
            budget = await read_budget(probe_conn)
        finally:
            await probe_conn.close()
        args.pool_size = worker_pool_size(args.pool_size, args.concurrency, budget)
        print(
            f"app pool: {args.pool_size} connections (server max_connections "
            f"{budget.max_connections}, {budget.in_use} in use)"
        )
        settings = base.model_copy(
            update={
                "database_url": urls.owner,
                "app_database_url": urls.app,
                "db_pool_min_size": args.pool_size,
                "db_pool_max_size": args.pool_size,
            }
        )
        print(f"embedded PostgreSQL start + migrate: {(time.perf_counter() - t0) * 1000:.0f} ms")
        owner_pool = await create_pool(urls.owner, application_name="bench-owner", max_size=2)
        app_pool = await create_pool(
            urls.app,
            application_name="bench-app",
            min_size=args.pool_size,
            max_size=args.pool_size,
        )
        if args.what_if_no_reset:
            # asyncpg runs a reset query (RESET ALL, UNLISTEN *, ...) on every release; a custom
            # `reset` replaces it. Pool has no setter, so the pool is rebuilt with one.
            await app_pool.close()
            app_pool = await asyncpg.create_pool(
                urls.app,
                min_size=args.pool_size,
                max_size=args.pool_size,
                init=pool_module._init_connection,
                reset=_no_reset,
                server_settings={
                    "application_name": "bench-app",
                    "statement_timeout": str(settings.db_statement_timeout_ms),
                    "timezone": "UTC",
                },
            )
        try:
            t0 = time.perf_counter()
            tenants = await _make_tenants(owner_pool, args.tenants, args.events_per_tenant)
            print(
                f"{args.tenants} tenants x {args.events_per_tenant} demo events (+ ANALYZE): "
                f"{time.perf_counter() - t0:.1f} s"
            )
            t0 = time.perf_counter()
            run_ids = await _queue(app_pool, tenants, args.runs)
            print(f"queued {len(run_ids)} investigations: {time.perf_counter() - t0:.2f} s")
            await _measure(args, settings, owner_pool, app_pool, litellm, server.get_pid())
        finally:
            await app_pool.close()
            await owner_pool.close()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"process start RSS {rss_start:.0f} MiB")


async def _measure(
    args: argparse.Namespace,
    settings: Settings,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    litellm: Any,
    postmaster_pid: int | None,
) -> None:
    latency_s = args.latency_ms / 1000
    probe = Probe()
    gateway = gateway_from_settings(settings, app_pool)
    assert gateway is not None
    # As `serve` and `worker` run it: the lease keeper on its own connection.
    worker = Worker(
        app_pool,
        gateway,
        concurrency=args.concurrency,
        heartbeat_url=settings.app_database_url,
    )
    all_done = asyncio.Event()
    patches = Patches()

    # The run a task belongs to, and when it was claimed and finished.
    real_process = worker.process

    async def process(claim: Claim) -> str:
        run = str(claim.run_id)
        if claim.takeover:
            # The lease of a run expired and this worker claimed it back: if the run is still
            # being executed here, the worker is taking over its own live run.
            live = run in probe.runs and not probe.runs[run].finished
            status = await real_process(claim)
            probe.takeovers.append((run, live, status))
            probe.finished_ids.add(run)
            if len(probe.finished_ids) >= args.runs:
                all_done.set()
            return status
        _RUN.set(run)
        trace = probe.runs[run]
        trace.claimed = time.perf_counter()
        try:
            trace.status = await real_process(claim)
            return trace.status
        finally:
            trace.finished = time.perf_counter()
            probe.finished_ids.add(run)
            if len(probe.finished_ids) >= args.runs:
                all_done.set()

    patches.set(worker, "process", process)
    if args.what_if_claim_batch > 0:
        patches.set(worker_module, "CLAIM_BATCH", args.what_if_claim_batch)
    patches.set(
        worker.claimer,
        "claim",
        probe.wrap_async("claim (own connection, one statement)", worker.claimer.claim),
    )

    # litellm's own time per call = acompletion wall time minus the mocked handler's time.
    real_acompletion = litellm.acompletion
    litellm_own = probe.phases["litellm (acompletion - provider handler)"]

    async def acompletion(*a: Any, **kw: Any) -> Any:
        slot: list[float] = []
        token = _CALL.set(slot)
        started = time.perf_counter()
        try:
            return await real_acompletion(*a, **kw)
        finally:
            litellm_own.append(time.perf_counter() - started - sum(slot))
            _CALL.reset(token)

    patches.set(litellm, "acompletion", acompletion)
    patches.set(
        gateway.ledger, "open_call", probe.wrap_async("reserve txn", gateway.ledger.open_call)
    )
    patches.set(gateway.ledger, "settle", probe.wrap_async("settle txn", gateway.ledger.settle))
    # The run's prompt memo: what each call redacts and counts (only its new messages).
    patches.set(
        PromptMemo,
        "prepare",
        probe.wrap_sync("memo.prepare (redact+count, CPU)", PromptMemo.prepare),
    )
    patches.set(
        PromptMemo, "count", probe.wrap_sync("memo.count (wrap-up reserve, CPU)", PromptMemo.count)
    )
    patches.set(
        memo_module,
        "redact_message",
        probe.wrap_sync("redact_message (one new message)", memo_module.redact_message),
    )
    patches.set(
        agent_module,
        "openai_tool_schemas",
        probe.wrap_sync("openai_tool_schemas (once per run)", agent_module.openai_tool_schemas),
    )
    patches.set(
        jobs_repository,
        "renew_leases",
        probe.wrap_async("heartbeat (all leases, 1 statement)", jobs_repository.renew_leases),
    )
    patches.set(EventSink, "emit", probe.wrap_async("event emit txn", EventSink.emit))
    patches.set(
        EvidenceLog, "run", probe.wrap_async("tools of a step (concurrent)", EvidenceLog.run)
    )
    patches.set(
        EvidenceLog,
        "record",
        probe.wrap_async("step record txn (tools + events)", EvidenceLog.record),
    )
    patches.set(
        evidence_module,
        "run_tool",
        probe.wrap_async("run_tool (one tool)", evidence_module.run_tool),
    )
    patches.set(
        gateway, "complete", probe.wrap_async("gateway.complete (incl. latency)", gateway.complete)
    )

    # Pool waits: asyncpg's Pool._acquire is what every `pool.acquire()` awaits (Pool has
    # __slots__, so the class is patched, for this pool only).
    real_acquire = asyncpg.pool.Pool._acquire

    async def acquire(pool: asyncpg.Pool, timeout: Any) -> Any:
        if pool is not app_pool:
            return await real_acquire(pool, timeout)
        started = time.perf_counter()
        conn = await real_acquire(pool, timeout)
        probe.pool_waits.append(time.perf_counter() - started)
        in_use = pool.get_size() - pool.get_idle_size()
        probe.pool_in_use_max = max(probe.pool_in_use_max, in_use)
        return conn

    patches.set(asyncpg.pool.Pool, "_acquire", acquire)

    lags: list[float] = []
    # The cyclic garbage collector's pauses (each stops the event loop), by generation.
    gc_pauses: dict[int, list[float]] = defaultdict(list)
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses[info["generation"]].append(time.perf_counter() - gc_started[0])

    rss_samples: list[float] = []
    in_flight: list[int] = []

    async def monitor() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.1)
            lags.append(time.perf_counter() - started - 0.1)
            rss_samples.append(_rss_now_mib())
            in_flight.append(worker.in_flight)

    waits: Counter[str] = Counter()
    samples = {"n": 0}

    async def sample_backends() -> None:
        """What the application role's backends are doing, every 0.25 s (via the owner)."""
        while True:
            await asyncio.sleep(0.25)
            async with owner_pool.acquire() as conn:
                rows = await conn.fetch(
                    """
                    SELECT state, coalesce(wait_event_type || ':' || wait_event, 'on CPU') AS w
                    FROM pg_stat_activity WHERE application_name = 'bench-app'
                    """
                )
            samples["n"] += 1
            for r in rows:
                waits[f"{r['state']} / {r['w'] if r['state'] == 'active' else '-'}"] += 1

    rss_before = _rss_now_mib()
    pg_cpu_before = _postgres_cpu_s(postmaster_pid)
    profiler = cProfile.Profile() if args.profile else None
    cpu_before = time.process_time()
    machine_before = _machine_busy_s()
    load_before = os.getloadavg()[0]
    uptime_before = _uptime()
    if profiler is not None:
        profiler.enable()
    gc.callbacks.append(on_gc)
    try:
        with respx.mock(assert_all_called=False) as router:
            router.post(OPENAI_URL).mock(
                side_effect=make_provider(probe, latency_s, datetime.now(UTC).date(), args.script)
            )
            lag_task = asyncio.create_task(monitor())
            backends_task = asyncio.create_task(sample_backends())
            started = time.perf_counter()
            worker_task = asyncio.create_task(worker.run_until_stopped())
            done_waiter = asyncio.create_task(all_done.wait())
            await asyncio.wait(
                {worker_task, done_waiter},
                timeout=args.runs * 2 + 120,
                return_when=asyncio.FIRST_COMPLETED,
            )
            wall = time.perf_counter() - started
            worker.stop()
            await asyncio.wait_for(worker_task, 30)
            done_waiter.cancel()
            lag_task.cancel()
            backends_task.cancel()
    finally:
        gc.callbacks.remove(on_gc)
        if profiler is not None:
            profiler.disable()
        patches.undo()
    cpu = time.process_time() - cpu_before
    machine_after = _machine_busy_s()
    machine = (
        machine_after - machine_before
        if machine_before is not None and machine_after is not None
        else None
    )
    load_after = os.getloadavg()[0]
    uptime_after = _uptime()
    pg_cpu_after = _postgres_cpu_s(postmaster_pid)
    rss_peak_run = max(rss_samples, default=_rss_now_mib())
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(args.profile)
        stats.sort_stats("cumulative").print_stats(args.profile)
        print(out.getvalue())

    await _report(
        args,
        probe,
        owner_pool,
        app_pool,
        wall=wall,
        cpu=cpu,
        pg_cpu=(pg_cpu_after - pg_cpu_before)
        if pg_cpu_before is not None and pg_cpu_after is not None
        else None,
        lags=lags,
        rss_before=rss_before,
        rss_peak_run=rss_peak_run,
        in_flight=in_flight,
        latency_s=latency_s,
        started=started,
        machine=machine,
        loads=(load_before, load_after),
        backend_states={k: v / max(1, samples["n"]) for k, v in waits.items()},
        leases=(
            worker.runtime.leases.lost,
            worker.runtime.leases.rounds,
            worker.runtime.leases.retries,
        ),
        uptimes=(uptime_before, uptime_after),
        gc_pauses=gc_pauses,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options (defaults: 200 runs, 300 ms, concurrency 200, 20 tenants) and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument(
        "--script",
        choices=SCRIPTS,
        default="default",
        help="what the mocked model does: default (3.5 LLM calls per run: two or three steps "
        "of tool calls, then the answer) or two-step (one tool call, then the answer)",
    )
    parser.add_argument("--events-per-tenant", type=int, default=10_000)
    parser.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="app pool connections (default: as the worker sizes it, one per run in flight "
        "within the server's max_connections)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="cProfile the event-loop thread during the runs; print the top N functions",
    )
    parser.add_argument(
        "--what-if-claim-batch",
        type=int,
        default=0,
        metavar="N",
        help="experiment, NOT what the service does: claim up to N runs per round trip "
        "instead of the worker's CLAIM_BATCH",
    )
    parser.add_argument(
        "--what-if-no-reset",
        action="store_true",
        help="experiment, NOT what the service does: the app pool skips asyncpg's reset query "
        "(one round trip) on every connection release",
    )
    asyncio.run(_run(parser.parse_args(list(argv or []))))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
