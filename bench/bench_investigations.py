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
import contextvars
import cProfile
import gc
import io
import json
import os
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import httpx
import respx

import llm_service.investigations.agent as agent_module
import llm_service.investigations.evidence as evidence_module
import llm_service.llm.prompt_memo as memo_module
import llm_service.workers.worker as worker_module
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

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
MAX_COST_CENTS = Decimal(30)  # the default (and highest) ceiling: $0.30
TIMEOUT_MS = 60_000  # the default (and longest) limit: 60 s
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out", "budget_exhausted")
QUESTIONS = (
    "Why did paid social revenue fall in the last 14 days compared with the two weeks before?",
    "Facebook paid revenue dropped last week. Is it fewer conversions or smaller orders?",
    "Affiliate refunds and chargebacks look high this month: which week, and how much revenue?",
    "Are we missing Shopify events? Some days look low; check the dead-letter queue.",
    "Instagram paid looks weak while organic social looks strong. Were sessions mislabelled?",
    "How different is facebook_paid's revenue under first-touch, last-touch and linear models?",
    "Which channels drove the largest orders in the last 30 days?",
    "Did anything change in email performance week over week?",
)
T = TypeVar("T")

# The run a coroutine belongs to: set when the worker starts processing a claim; every task the
# run creates (the agent loop, its tool calls) copies it, so the mocked provider sees it too.
_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_run", default=None)
# Per provider call: a list the mocked handler appends its own duration to.
_CALL: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "bench_call", default=None
)


# -- figures -------------------------------------------------------------------------------------


def _q(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    return (
        f"p50 {_q(values, 0.5) * 1000:8.2f} ms  p95 {_q(values, 0.95) * 1000:8.2f} ms  "
        f"max {max(values) * 1000:8.2f} ms  mean {statistics.fmean(values) * 1000:8.2f} ms  "
        f"(n={len(values)})"
    )


def _s(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    return (
        f"p50 {_q(values, 0.5):6.2f} s  p95 {_q(values, 0.95):6.2f} s  max {max(values):6.2f} s  "
        f"(n={len(values)})"
    )


def _rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _postgres_cpu_s(postmaster_pid: int | None) -> float | None:
    """CPU seconds of the postmaster and its children (live ones plus those it has reaped)."""
    if postmaster_pid is None or not Path("/proc").is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")

    def stat(pid: str) -> list[str] | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on

    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat(entry)
        if fields is None:
            continue
        if int(entry) == postmaster_pid or int(fields[1]) == postmaster_pid:
            # utime, stime, cutime, cstime are fields 14-17 (index 11-14 from field 3)
            total += sum(int(x) for x in fields[11:15])
    return total / ticks


def _uptime() -> str:
    """`uptime`'s line (the machine's load), or why it is missing."""
    try:
        done = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(uptime unavailable: {type(exc).__name__})"
    return done.stdout.strip() or done.stderr.strip()


def _machine_busy_s() -> float | None:
    """CPU seconds all processes of the machine have used since boot (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# -- instrumentation -----------------------------------------------------------------------------


@dataclass
class RunTrace:
    """What one run did, as seen from this process."""

    claimed: float = 0.0
    finished: float = 0.0
    status: str = ""
    provider_in: list[float] = field(default_factory=list)
    provider_out: list[float] = field(default_factory=list)


class Probe:
    """Timings collected from wrappers around the service's own functions (no service change)."""

    def __init__(self) -> None:
        self.runs: dict[str, RunTrace] = defaultdict(RunTrace)
        self.phases: dict[str, list[float]] = defaultdict(list)
        self.mock_cpu: list[float] = []
        self.sleep_overshoot: list[float] = []
        self.unattributed_calls = 0
        self.prompt_ratio: list[float] = []  # mocked usage / the gateway's own estimate
        self.pool_waits: list[float] = []
        self.pool_in_use_max = 0
        self.finished_ids: set[str] = set()
        self.takeovers: list[tuple[str, bool, str]] = []  # run, still running here, outcome

    def wrap_async(
        self, name: str, func: Callable[..., Awaitable[T]]
    ) -> Callable[..., Awaitable[T]]:
        phases = self.phases[name]

        async def wrapper(*args: Any, **kwargs: Any) -> T:
            started = time.perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                phases.append(time.perf_counter() - started)

        return wrapper

    def wrap_sync(self, name: str, func: Callable[..., T]) -> Callable[..., T]:
        phases = self.phases[name]

        def wrapper(*args: Any, **kwargs: Any) -> T:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                phases.append(time.perf_counter() - started)

        return wrapper


class Patches:
    """Attribute replacements, undone in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def set(self, owner: Any, name: str, value: Any) -> Any:
        original = getattr(owner, name)
        self._undo.append((owner, name, original))
        setattr(owner, name, value)
        return original

    def undo(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


# -- the mocked provider -------------------------------------------------------------------------


def _completion(message: dict[str, Any], prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _tool_calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{i}_{time.monotonic_ns()}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls)
        ],
    }


def _plan(rng: random.Random, today: date) -> list[list[tuple[str, dict[str, Any]]]]:
    """Two or three steps of tool calls, with arguments a model would plausibly send."""
    end = today + timedelta(days=1)
    days = rng.choice((7, 14, 28))
    start = end - timedelta(days=days)
    iso = date.isoformat
    channel = rng.choice(("facebook_paid", "instagram_paid", "google_ads", "email", "affiliate"))
    steps: list[list[tuple[str, dict[str, Any]]]] = [
        [
            ("channel_performance", {"start": iso(start), "end": iso(end)}),
            ("compare_periods", {"current_start": iso(start), "current_end": iso(end)}),
        ],
        [
            ("top_orders", {"start": iso(start), "end": iso(end), "channel": channel, "limit": 10}),
            ("revenue_state_changes", {"start": iso(start), "end": iso(end), "channel": channel}),
        ],
    ]
    if rng.random() < 0.5:
        wide = iso(end - timedelta(days=30))
        steps.append(
            [
                rng.choice(
                    (
                        ("dead_event_summary", {"start": wide, "end": iso(end)}),
                        ("channel_corrections", {"start": wide, "end": iso(end)}),
                        ("reconciliation_status", {"start": wide, "end": iso(end)}),
                        (
                            "compare_attribution_models",
                            {"start": iso(start), "end": iso(end), "channel": channel},
                        ),
                    )
                )
            ]
        )
    return steps


def _final_answer(ids: list[str], rng: random.Random) -> dict[str, Any]:
    findings = [
        {
            "claim": f"Finding {i + 1}: the channel's attributed revenue moved by "
            f"{rng.randint(5, 45)}% against the previous period, driven by conversions.",
            "evidence": ids[i : i + 2] or ids[:1],
        }
        for i in range(min(3, max(1, len(ids))))
    ]
    report = {
        "summary": "Paid social revenue fell in the period mainly because facebook_paid "
        "conversions dropped while order values stayed close to their usual level; refunds and "
        "ingestion gaps explain only a small part of the change.",
        "findings": findings,
    }
    return {"content": json.dumps(report)}


def make_provider(
    probe: Probe, latency_s: float, today: date
) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """An async respx side effect: sleep the latency, then answer from the conversation."""

    async def provider(request: httpx.Request) -> httpx.Response:
        entered = time.perf_counter()
        run = _RUN.get()
        if run is None:
            probe.unattributed_calls += 1
        else:
            probe.runs[run].provider_in.append(entered)
        rng = random.Random(f"{run}:{entered}")
        body = json.loads(request.content)
        messages = body["messages"]
        ids = [json.loads(m["content"])["evidence_id"] for m in messages if m.get("role") == "tool"]
        done_steps = sum(
            1 for m in messages if m.get("role") == "assistant" and m.get("tool_calls")
        )
        plan = _plan(random.Random(run), today)
        if body.get("tools") and done_steps < len(plan):
            message = _tool_calls(*plan[done_steps])
            completion = rng.randint(50, 120)
        else:
            message = _final_answer(ids, rng)
            completion = rng.randint(200, 300)
        completion = min(completion, int(body.get("max_tokens") or completion))
        # About what the gateway counted (a little under: an honest provider's usage is believed).
        prompt = int(len(request.content) / 4.5)
        response = httpx.Response(200, json=_completion(message, prompt, completion))
        own = time.perf_counter() - entered
        probe.mock_cpu.append(own)
        await asyncio.sleep(latency_s)
        left = time.perf_counter()
        probe.sleep_overshoot.append(left - entered - own - latency_s)
        if run is not None:
            probe.runs[run].provider_out.append(left)
        slot = _CALL.get()
        if slot is not None:
            slot.append(left - entered)
        return response

    return provider


# -- what-if experiments (not what the service does) ---------------------------------------------


def _what_ifs(args: argparse.Namespace) -> str:
    changes = []
    if args.what_if_claim_batch > 0:
        changes.append(f"claims batched by {args.what_if_claim_batch}")
    if args.what_if_no_reset:
        changes.append("no reset query on release")
    return f" [WHAT-IF: {', '.join(changes)}]" if changes else ""


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
        worker_module,
        "claim_batch",
        probe.wrap_async("claim_batch (pool wait + claim txn)", worker_module.claim_batch),
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
                side_effect=make_provider(probe, latency_s, datetime.now(UTC).date())
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
        leases=(worker.runtime.leases.lost, worker.runtime.leases.rounds),
        uptimes=(uptime_before, uptime_after),
        gc_pauses=gc_pauses,
    )


async def _report(
    args: argparse.Namespace,
    probe: Probe,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    *,
    wall: float,
    cpu: float,
    pg_cpu: float | None,
    lags: list[float],
    rss_before: float,
    rss_peak_run: float,
    in_flight: list[int],
    latency_s: float,
    started: float,
    machine: float | None,
    loads: tuple[float, float],
    backend_states: dict[str, float],
    leases: tuple[int, int],
    uptimes: tuple[str, str],
    gc_pauses: dict[int, list[float]],
) -> None:
    # The database's view (the owner bypasses row-level security: it is the superuser here).
    async with owner_pool.acquire() as conn:
        runs = [dict(r) for r in await conn.fetch(
            """
            SELECT i.id, i.status, i.reason, i.cost_cents, i.max_cost_cents, i.elapsed_ms,
                   i.timeout_ms, i.result ? 'overrun_cents' AS overrun,
                   extract(epoch FROM i.finished_at - i.started_at) AS db_elapsed_s,
                   (SELECT coalesce(sum(c.cost_cents), 0) FROM llm_api_calls c
                     WHERE c.investigation_id = i.id) AS ledger_cents,
                   (SELECT count(*) FROM llm_api_calls c WHERE c.investigation_id = i.id) AS calls,
                   (SELECT count(*) FROM investigation_tool_calls t
                     WHERE t.investigation_id = i.id) AS tools,
                   (SELECT count(*) FROM investigation_tool_calls t
                     WHERE t.investigation_id = i.id AND t.error IS NOT NULL) AS tool_errors,
                   (SELECT count(*) FROM investigation_events e
                     WHERE e.investigation_id = i.id AND e.event_type = 'step') AS steps
            FROM investigations i
            """
        )]  # fmt: skip
        pending_sql = "SELECT count(*) FROM llm_api_calls WHERE status = 'pending'"
        pending_at_stop = pending = await conn.fetchval(pending_sql)
        if pending:
            # A shielded settle may still be finishing in the background: look again.
            await asyncio.sleep(3)
            pending = await conn.fetchval(pending_sql)
        stuck = await conn.fetch(
            """
            SELECT i.status AS run_status, i.reason AS run_reason
            FROM llm_api_calls c LEFT JOIN investigations i ON i.id = c.investigation_id
            WHERE c.status = 'pending'
            """
        )
        call_statuses = Counter(
            {
                r["status"]: r["n"]
                for r in await conn.fetch(
                    "SELECT status, count(*) AS n FROM llm_api_calls GROUP BY status"
                )
            }
        )
        tool_ms = [
            r["duration_ms"] / 1000
            for r in await conn.fetch("SELECT duration_ms FROM investigation_tool_calls")
        ]
        estimates = await conn.fetch(
            """
            SELECT (request_metadata->>'input_tokens_estimate')::int AS estimate, input_tokens
            FROM llm_api_calls WHERE input_tokens IS NOT NULL
            """
        )
    async with app_pool.acquire() as conn:
        reconcile = await conn.fetch("SELECT * FROM fn_reconcile_monthly_costs(NULL)")

    statuses = Counter(r["status"] for r in runs)
    calls = sum(r["calls"] for r in runs)
    tools = sum(r["tools"] for r in runs)
    steps = sum(r["steps"] for r in runs)
    traces = [t for t in probe.runs.values() if t.finished]
    elapsed = [t.finished - t.claimed for t in traces]
    db_elapsed = [float(r["db_elapsed_s"]) for r in runs if r["db_elapsed_s"] is not None]
    over_time = [
        r for r in runs
        if r["elapsed_ms"] is None or r["elapsed_ms"] > r["timeout_ms"]
        or (r["db_elapsed_s"] is not None and float(r["db_elapsed_s"]) * 1000 > r["timeout_ms"])
    ]  # fmt: skip
    over_budget = [
        r for r in runs
        if r["cost_cents"] > r["max_cost_cents"] or r["ledger_cents"] > r["max_cost_cents"]
        or r["overrun"]
    ]  # fmt: skip

    # Service time per step: between a provider answer and the next provider call of the run
    # (settle, events, tool queries, recording, reserve, request building), and per run around
    # the provider calls (claim -> first call, last answer -> finished).
    between: list[float] = []
    step_minus_latency: list[float] = []
    first: list[float] = []
    last: list[float] = []
    run_overhead: list[float] = []
    for t in traces:
        ins, outs = t.provider_in, t.provider_out
        if not ins or len(ins) != len(outs):
            continue
        first.append(ins[0] - t.claimed)
        last.append(t.finished - outs[-1])
        for k in range(len(ins) - 1):
            between.append(ins[k + 1] - outs[k])
            step_minus_latency.append(ins[k + 1] - ins[k] - latency_s)
        run_overhead.append((t.finished - t.claimed) - len(ins) * latency_s)

    print(
        f"\n{args.runs} investigations, {args.tenants} tenants x {args.events_per_tenant} events, "
        f"ONE worker (concurrency {args.concurrency}), app pool {args.pool_size} connections"
        f"{_what_ifs(args)}, "
        f"provider latency {args.latency_ms:g} ms, {os.cpu_count()} CPUs"
    )
    print(
        f"  wall {wall:.2f} s; throughput {len(traces) / wall:.1f} runs/s, "
        f"{steps / wall:.1f} agent steps/s, {calls / wall:.1f} LLM calls/s, "
        f"{tools / wall:.1f} tool calls/s"
    )
    print(
        f"  per run: {steps / max(1, len(runs)):.2f} steps, {calls / max(1, len(runs)):.2f} LLM "
        f"calls, {tools / max(1, len(runs)):.2f} tool calls "
        f"({sum(r['tool_errors'] for r in runs)} tool errors)"
    )
    print(
        f"  in flight (sampled every 0.1 s): max {max(in_flight, default=0)}, "
        f"median {_q(in_flight, 0.5) if in_flight else 0:.0f}"
    )
    queue_wait = [t.claimed - started for t in traces]
    peak = max(in_flight, default=0)
    print(
        f"  claimed after (queue wait, not counted in the 60 s): {_s(queue_wait)}; "
        f"in flight reached {peak} "
        f"{'= all it could' if peak >= min(args.runs, args.concurrency) else '(NOT all queued)'}"
    )
    print(f"  terminal statuses: {dict(statuses)}")
    leases_lost, heartbeat_rounds = leases
    print(
        f"  leases: {leases_lost} lost; {heartbeat_rounds} batched heartbeats "
        "(one statement each, renewing every lease held, on the keeper's own connection)"
    )
    returned = Counter(t.status for t in traces)
    if returned != statuses or probe.takeovers:
        live = sum(1 for _, alive, _ in probe.takeovers if alive)
        print(
            f"  what the worker's run() calls returned: {dict(returned)}; takeovers by this "
            f"worker: {len(probe.takeovers)}, of runs it was STILL RUNNING itself: {live}"
        )
    for (status, reason), n in Counter(
        (r["status"], r["reason"]) for r in runs if r["status"] != "succeeded"
    ).most_common(5):
        print(f"    {n} x {status}: {reason}")
    print(f"  run elapsed (claim -> terminal, this process): {_s(elapsed)}  limit 60 s")
    print(f"  run elapsed (started_at -> finished_at, DB):     {_s(db_elapsed)}")
    print(
        f"  over time: {len(over_time)}   over budget: {len(over_budget)}   "
        f"(runs not terminal: {sum(1 for r in runs if r['status'] not in TERMINAL)})"
    )
    spend = [float(r["cost_cents"]) for r in runs]
    print(
        f"  spend per run: max {max(spend, default=0):.4f} cents, median "
        f"{_q(spend, 0.5) if spend else 0:.4f} cents (ceiling {MAX_COST_CENTS} cents); "
        f"runs whose recorded spend < / > their ledger sum: "
        f"{sum(1 for r in runs if r['cost_cents'] < r['ledger_cents'])} / "
        f"{sum(1 for r in runs if r['cost_cents'] > r['ledger_cents'])}"
    )
    ratios = [r["input_tokens"] / r["estimate"] for r in estimates if r["estimate"]]
    if ratios:
        print(
            f"  mocked prompt_tokens / gateway estimate: p50 {_q(ratios, 0.5):.2f}, "
            f"max {max(ratios):.2f} (the reservation allows 1.02)"
        )

    print("\n  the service's own time (not the provider's latency):")
    print(f"    step wall - latency (call k -> k+1) {_ms(step_minus_latency)}")
    print(f"    between answer k and call k+1       {_ms(between)}")
    print(f"    claim -> first provider call        {_ms(first)}")
    print(f"    last answer -> run finished         {_ms(last)}")
    print(f"    whole run - calls x latency         {_ms(run_overhead)}")
    print("  phases (wall time, includes waiting for the loop and the pool):")
    for name, values in sorted(probe.phases.items()):
        print(f"    {name:36s}{_ms(values)}")
    print(f"    {'tool duration_ms (recorded)':36s}{_ms(tool_ms)}")
    print(f"    {'mock handler own CPU (not service)':36s}{_ms(probe.mock_cpu)}")
    print(f"    {'provider sleep overshoot (loop lag)':36s}{_ms(probe.sleep_overshoot)}")
    print(
        f"  app pool: {len(probe.pool_waits)} acquires, wait {_ms(probe.pool_waits)}; "
        f"max in use {probe.pool_in_use_max}/{args.pool_size}; "
        f"total wait {sum(probe.pool_waits):.1f} s"
    )
    print(
        "  app backends, mean count per sample (state / wait): "
        + ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(backend_states.items(), key=lambda kv: -kv[1])
        )
    )
    print(f"  event-loop lag (asyncio.sleep(0.1) overshoot): {_ms(lags)}")
    for generation, pauses in sorted(gc_pauses.items()):
        print(
            f"  GC generation {generation}: {len(pauses)} collections, "
            f"{sum(pauses) * 1000:.0f} ms in all, {_ms(pauses)}"
        )
    pg = f"{pg_cpu:.1f} s" if pg_cpu is not None else "n/a"
    print(
        f"  CPU: this process {cpu:.1f} s ({cpu / wall * 100:.0f}% of one core), "
        f"PostgreSQL {pg}; per run {cpu / max(1, len(traces)) * 1000:.1f} ms (process), "
        f"{(cpu - sum(probe.mock_cpu)) / max(1, len(traces)) * 1000:.1f} ms without the mocked "
        "provider's own handler"
    )
    if machine is not None:
        others = machine - cpu - (pg_cpu or 0.0)
        print(
            f"  machine: {machine:.1f} CPU-s busy of {wall * (os.cpu_count() or 1):.1f} available; "
            f"other processes used {others:.1f} CPU-s during the run "
            f"(load average {loads[0]:.2f} -> {loads[1]:.2f}"
            f"{'; figures DISTURBED by other load' if others > 0.1 * wall else ''})"
        )
    print(
        f"  RSS: before the run {rss_before:.0f} MiB, peak during the run {rss_peak_run:.0f} "
        f"MiB (+{rss_peak_run - rss_before:.0f}), process peak (getrusage) "
        f"{_peak_rss_mib():.0f} MiB"
    )
    if probe.unattributed_calls:
        print(f"  (provider calls not attributed to a run: {probe.unattributed_calls})")

    ok = bool(reconcile) and all(
        r["recorded_cost_cents"] == r["computed_cost_cents"]
        and r["recorded_calls"] == r["computed_calls"]
        and r["breakdowns_match"]
        for r in reconcile
    )
    print(
        f"\n  ledger: {sum(call_statuses.values())} llm_api_calls {dict(call_statuses)}, "
        f"pending left: {pending} (right after the worker stopped: {pending_at_stop}); "
        f"fn_reconcile_monthly_costs: {len(reconcile)} tenant-months, "
        f"all recorded == computed: {ok}"
    )
    for row in stuck:
        print(f"    pending call of a run now {row['run_status']}: {row['run_reason']}")
    print(f"  uptime before: {uptimes[0]}\n  uptime after:  {uptimes[1]}")
    verdict = (
        leases_lost == 0
        and peak >= min(args.runs, args.concurrency)
        and len(over_time) == 0
        and len(over_budget) == 0
        and statuses.get("succeeded", 0) == args.runs
        and pending == 0
        and ok
    )
    print(
        f"  target (all {min(args.runs, args.concurrency)} in flight at once on one worker, none "
        f"over budget or time, no lease lost, all "
        f"succeeded, ledger reconciled): {'MET' if verdict else 'NOT MET'}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options (defaults: 200 runs, 300 ms, concurrency 200, 20 tenants) and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=20)
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
