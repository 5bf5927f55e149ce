"""End-to-end load: explanations, investigations and finance reads at once, over real HTTP.

Run from the repository root: `python -m bench.bench_load [--seconds 60 --clients 20 ...]`.

Set-up (the pieces of bench_explanations and bench_investigations, imported): an embedded
PostgreSQL in a temporary directory (deleted afterwards), migrated; `--tenants` tenants, of which
`--data-tenants` get `--events` demo events each; an OpenAI-compatible stub (a subprocess on
127.0.0.1) that sleeps `--latency-ms` per call and answers by what is asked: a request with
`tools`, or a conversation already holding tool results, gets bench_investigations' scripted
analyst (two or three steps of tool calls, then a final report citing the evidence ids it was
shown); anything else gets bench_explanations' explanation. Then the REAL service,
`llm-service serve` (uvicorn, one process, its in-process worker on; `--worker` adds one
`llm-service worker` process), with `openai/gpt-4o-mini` pointed at the stub and
FINANCE_API_TOKEN set.

1. Warm-up: every known explanation scope of the data tenants (bench_explanations' scopes: plain
   and with a question) is requested once, `--clients` at a time (misses: each calls the stub).
2. Mixed phase: `--clients` keep-alive clients for `--seconds`, each request drawn from a
   weighted mix (MIX): explanations (70%: ~90% repeat a warmed scope, plain, with its stored
   question or with an accepted paraphrase; ~10% ask for a new period, a miss), investigation
   creates (10%; `--tight-share` of them with tight limits, $0.002 and 20 s), reads of a
   created investigation (10%), a tenant's monthly costs (5%, any tenant) and finance's monthly
   (JSON, CSV) and daily costs (5%). `--rate` paces them (requests/s in all); 0 = closed loop.
3. Drain: every investigation is polled until terminal, for at most `--drain-seconds`; the
   ones still unfinished then are cancelled, and counted.

Reported: per route throughput, client-side p50/p95/p99 and non-2xx responses by status; the
explanation cache's hit ratio; investigations by terminal status, and any whose spend (as the API
and as the ledger say) passed its ceiling or whose elapsed time passed its timeout; tenants over
their monthly cap; peak memory of the service's processes (VmHWM) and PostgreSQL's (private
memory summed over its processes, shared memory once); CPU of each; and after the runs the
ledger: `llm_api_calls` rows still pending (as the owner) and the exit code of
`llm-service costs reconcile` against the same database. A missing money record or an exceeded
limit is printed loudly. Figures only, never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.bench_cache import _accepted_pairs
from bench.bench_explanations import (
    _VARIANTS,
    MODEL,
    Call,
    _known_calls,
    _load,
    _weeks,
    explanation_completion,
)
from bench.harness import (
    ROOT,
    free_port,
    serve_stub,
    start,
    stop,
    stub_app,
    wait_http,
)
from bench.investigation_provider import (
    QUESTIONS,
    _completion,
    _final_answer,
    _plan,
    _tool_calls,
    honest_prompt_tokens,
)
from bench.load_figures import (
    PROCESS_NAMES,
    Sampler,
    Tally,
    cpu_now,
    find_problems,
    ledger_view,
    log_levels,
    loud,
    machine_now,
    print_routes,
    reconcile,
    resource_figures,
    run_figures,
    send,
)
from cache.embedding_local import get_local_embedder
from llm_service.db import migrate
from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.db.pool import create_pool
from llm_service.tenants.service import create_tenant

WARM = "POST /v1/explanations (warmed scope)"
NEW = "POST /v1/explanations (new scope)"
CREATE = "POST /v1/investigations"
READ = "GET /v1/investigations/{id}"
TENANT_COSTS = "GET /v1/costs/monthly"
FINANCE_ROUTES = (
    ("GET /v1/finance/monthly-costs", "/v1/finance/monthly-costs", {}),
    ("GET /v1/finance/monthly-costs?format=csv", "/v1/finance/monthly-costs", {"format": "csv"}),
    ("GET /v1/finance/daily-costs", "/v1/finance/daily-costs", {}),
)
TIGHT_LIMITS = {"max_cost_usd": "0.002", "timeout_s": 20}
MAX_REQUESTS_PER_CLIENT = 20_000
POLL_CONCURRENCY = 10


# -- the provider stub ----------------------------------------------------------------------------


def _evidence_id(content: Any) -> str | None:
    """The evidence id of a tool message's JSON content, if it has one."""
    try:
        value = json.loads(content)["evidence_id"]
    except (TypeError, ValueError, KeyError):
        return None
    return str(value)


def _is_investigation(body: dict[str, Any]) -> bool:
    """An agent step (tools offered) or its wrap-up (tool results in the conversation)."""
    return bool(body.get("tools")) or any(m.get("role") == "tool" for m in body["messages"])


def _investigation_completion(body: dict[str, Any], size: int, today: date) -> dict[str, Any]:
    """bench_investigations' scripted analyst: the planned tool calls, then a cited report."""
    messages = body["messages"]
    ids = [i for m in messages if m.get("role") == "tool" if (i := _evidence_id(m["content"]))]
    done = sum(1 for m in messages if m.get("role") == "assistant" and m.get("tool_calls"))
    question = next((str(m["content"]) for m in messages if m.get("role") == "user"), "")
    plan = _plan(random.Random(question), today)
    rng = random.Random(f"{question}:{done}:{len(ids)}")
    if body.get("tools") and done < len(plan):
        message, completion = _tool_calls(*plan[done]), rng.randint(50, 120)
    else:
        message, completion = _final_answer(ids, rng), rng.randint(200, 300)
    granted = body.get("max_tokens") or body.get("max_completion_tokens") or completion
    return _completion(message, honest_prompt_tokens(body), min(completion, int(granted)))


def _answer(body: dict[str, Any], size: int) -> dict[str, Any]:
    """What the stub answers: an investigation step or an explanation."""
    if _is_investigation(body):
        return _investigation_completion(body, size, datetime.now(UTC).date())
    return explanation_completion(body, size)


# -- the workload ---------------------------------------------------------------------------------


@dataclass
class Workload:
    """The requests of the mixed phase: whom they are for and what they ask."""

    hits: list[Call]  # warmed explanation scopes
    data_keys: list[str]  # tenants with demo data (explanations, investigations)
    all_keys: list[str]  # every tenant (cost reads)
    finance_token: str
    month: str
    today: date
    new_share: float
    tight_share: float
    tally: Tally = field(default_factory=Tally)

    def _new_scope(self, rng: random.Random) -> Call:
        """An explanation of a period not warmed (a miss, most likely never asked before)."""
        end = self.today - timedelta(days=rng.randint(0, 60))
        start = end - timedelta(days=rng.randint(2, 27))
        period = {"start": start.isoformat(), "end": end.isoformat()}
        return Call(rng.choice(self.data_keys), {**rng.choice(_VARIANTS), "period": period})

    async def explanation(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        """A warmed scope (a hit, normally) or, `new_share` of the time, a new one."""
        new = rng.random() < self.new_share
        call = self._new_scope(rng) if new else rng.choice(self.hits)
        route = NEW if new else WARM
        self.tally.count_explanation(
            await send(
                http, self.tally, route, "POST", "/v1/explanations", call.api_key, json=call.body
            )
        )

    async def create(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        """Queue an investigation (202), with tight limits `tight_share` of the time."""
        key = rng.choice(self.data_keys)
        body: dict[str, Any] = {"question": rng.choice(QUESTIONS)}
        if rng.random() < self.tight_share:
            body.update(TIGHT_LIMITS)
        response = await send(
            http, self.tally, CREATE, "POST", "/v1/investigations", key, json=body
        )
        if response is not None:
            run = response.json()
            self.tally.runs[run["id"]] = key
            self.tally.state[run["id"]] = run

    async def read(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        """Read one created investigation (a dashboard polling it); create one if none yet."""
        if not self.tally.runs:
            await self.create(http, rng)
            return
        run_id = rng.choice(list(self.tally.runs))
        url = f"/v1/investigations/{run_id}"
        response = await send(http, self.tally, READ, "GET", url, self.tally.runs[run_id])
        if response is not None:
            self.tally.state[run_id] = response.json()

    async def tenant_costs(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        """A tenant's monthly costs, JSON or CSV."""
        params = {"month": self.month, "format": rng.choice(("json", "csv"))}
        key = rng.choice(self.all_keys)
        await send(http, self.tally, TENANT_COSTS, "GET", "/v1/costs/monthly", key, params=params)

    async def finance(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        """One of finance's reads, with the finance token."""
        route, url, extra = rng.choice(FINANCE_ROUTES)
        params = {"month": self.month, **extra}
        await send(http, self.tally, route, "GET", url, self.finance_token, params=params)


Action = Callable[[Workload, httpx.AsyncClient, random.Random], Awaitable[None]]
#: The mixed phase's requests and their weights (percent).
MIX: tuple[tuple[Action, int], ...] = (
    (Workload.explanation, 70),
    (Workload.create, 10),
    (Workload.read, 10),
    (Workload.tenant_costs, 5),
    (Workload.finance, 5),
)


async def _mixed(base_url: str, work: Workload, clients: int, seconds: float, rate: float) -> None:
    """`clients` keep-alive clients drawing from MIX for `seconds` (paced at `rate` if > 0)."""
    actions, weights = zip(*MIX, strict=True)
    interval = clients / rate if rate > 0 else 0.0
    stop_at = time.perf_counter() + seconds

    async def client(i: int) -> None:
        """One client: a request at a time, on schedule when paced."""
        rng = random.Random(1000 + i)
        due = time.perf_counter() + interval * i / clients
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                if interval:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    due += interval
                if time.perf_counter() >= stop_at:
                    return
                await rng.choices(actions, weights)[0](work, http, rng)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    work.tally.wall_s = time.perf_counter() - started


async def _warm(base_url: str, calls: list[Call], clients: int) -> Tally:
    """Each call once, `clients` at a time (stores the warmed scopes)."""
    tally = Tally()
    gate = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:

        async def one(call: Call) -> None:
            route = f"warm-up {WARM}"
            async with gate:
                response = await send(
                    http, tally, route, "POST", "/v1/explanations", call.api_key, json=call.body
                )
            tally.count_explanation(response)

        started = time.perf_counter()
        await asyncio.gather(*(one(call) for call in calls))
        tally.wall_s = time.perf_counter() - started
    return tally


async def _poll(http: httpx.AsyncClient, tally: Tally, run_ids: list[str]) -> None:
    """The current state of each run (POLL_CONCURRENCY at a time; not recorded as load)."""
    gate = asyncio.Semaphore(POLL_CONCURRENCY)

    async def one(run_id: str) -> None:
        async with gate:
            headers = {"Authorization": f"Bearer {tally.runs[run_id]}"}
            try:
                response = await http.get(f"/v1/investigations/{run_id}", headers=headers)
            except httpx.HTTPError:
                return
        if response.is_success:
            tally.state[run_id] = response.json()

    await asyncio.gather(*(one(run_id) for run_id in run_ids))


async def _drain(base_url: str, tally: Tally, seconds: float) -> int:
    """Poll until every run is terminal (at most `seconds`), then cancel the rest; how many."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        await _poll(http, tally, list(tally.runs))
        while tally.unfinished() and time.monotonic() < deadline:
            await asyncio.sleep(2)
            await _poll(http, tally, tally.unfinished())
        late = tally.unfinished()
        for run_id in late:
            headers = {"Authorization": f"Bearer {tally.runs[run_id]}"}
            await http.post(f"/v1/investigations/{run_id}/cancel", headers=headers)
        for _ in range(15):
            if not tally.unfinished():
                break
            await asyncio.sleep(1)
            await _poll(http, tally, tally.unfinished())
    return len(late)


# -- processes -------------------------------------------------------------------------------------


def _service_env(
    owner_url: str, stub_port: int, data_dir: Path, args: argparse.Namespace
) -> dict[str, str]:
    """The service's environment: the embedded database, the stub provider, a finance token."""
    return {
        **os.environ,
        "DATABASE_URL": owner_url,
        "LLM_MODEL": MODEL,
        "LLM_API_BASE": f"http://127.0.0.1:{stub_port}/v1",
        "OPENAI_API_KEY": "sk-bench",
        "EMBEDDING_MODEL": "local",
        "WORKERS_IN_PROCESS": "1",
        "FINANCE_API_TOKEN": args.finance_token,
        "DB_POOL_MAX_SIZE": str(args.pool),
        "LLM_SERVICE_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(ROOT),
    }


async def _start_all(
    processes: list[subprocess.Popen[bytes]],
    env: dict[str, str],
    stub_port: int,
    port: int,
    data_dir: Path,
    args: argparse.Namespace,
) -> None:
    """Start the stub, the service and (--worker) a worker into `processes`; wait for them."""
    stub_cmd = [sys.executable, "-m", "bench.bench_load", "--stub", str(stub_port)]
    stub_cmd += ["--latency-ms", str(args.latency_ms)]
    cli = [sys.executable, "-m", "llm_service.cli"]
    serve = [*cli, "serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(port)]
    processes.append(start(stub_cmd, env, data_dir / "stub.log"))
    processes.append(start(serve, env, data_dir / "service.log"))
    if args.worker:
        processes.append(start([*cli, "worker"], env, data_dir / "worker.log"))
    await wait_http(f"http://127.0.0.1:{stub_port}/health", processes[0], data_dir / "stub.log")
    await wait_http(f"http://127.0.0.1:{port}/healthz", processes[1], data_dir / "service.log")


# -- set-up -------------------------------------------------------------------------------------


async def _tenants(owner_url: str, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(API keys of the tenants with demo data, API keys of every tenant)."""
    data = [key for _, key in await _load(owner_url, args)]
    pool = await create_pool(owner_url, application_name="bench-load-owner", max_size=2)
    try:
        others = [
            (await create_tenant(pool, f"bench-load-tenant-{i}")).api_key
            for i in range(max(0, args.tenants - len(data)))
        ]
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE")
    finally:
        await pool.close()
    return data, data + others


@dataclass(frozen=True)
class Setup:
    """What the set-up made: the processes, where they answer, the tenants and their scopes."""

    env: dict[str, str]
    owner_url: str
    postmaster: int | None
    processes: list[subprocess.Popen[bytes]]
    base_url: str
    store: list[Call]  # the calls that warm the explanation scopes
    hits: list[Call]  # the calls that should hit them
    data_keys: list[str]
    all_keys: list[str]
    today: date


def _keep_logs(data_dir: Path, dest: Path) -> None:
    """Copy the processes' logs out of the temporary directory."""
    dest.mkdir(parents=True, exist_ok=True)
    for log in data_dir.glob("*.log"):
        shutil.copy(log, dest / log.name)


# -- the run ------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, load, drain, check the ledger, report; tear down."""
    machine = machine_now()
    print(
        f"machine: {machine['nproc']} CPUs (shared), {machine['mem_total_gib']:.0f} GiB, "
        f"Python {machine['python']}, load average before "
        + " / ".join(f"{x:.2f}" for x in machine["loadavg"])
    )
    data_dir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    server = start_embedded(data_dir, cleanup="delete")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.perf_counter()
        owner_url = embedded_url(server)
        migrate.upgrade(owner_url)
        data_keys, all_keys = await _tenants(owner_url, args)
        pairs, _ = _accepted_pairs(get_local_embedder())
        today = datetime.now(UTC).date()
        store, hits = _known_calls(data_keys, _weeks(today, args.weeks), pairs)
        stub_port, port = free_port(), free_port()
        env = _service_env(owner_url, stub_port, data_dir, args)
        await _start_all(processes, env, stub_port, port, data_dir, args)
        print(
            f"set-up: {len(all_keys)} tenants ({len(data_keys)} x {args.events:,} demo events), "
            f"service up in {time.perf_counter() - t0:.0f} s; stub latency {args.latency_ms:g} ms"
            f"; service pool {args.pool}, in-process worker"
            + (" + 1 worker process" if args.worker else "")
        )
        setup = Setup(
            env=env,
            owner_url=owner_url,
            postmaster=server.get_pid(),
            processes=processes,
            base_url=f"http://127.0.0.1:{port}",
            store=store,
            hits=hits,
            data_keys=data_keys,
            all_keys=all_keys,
            today=today,
        )
        return await _measure(args, machine, setup)
    finally:
        for process in reversed(processes):
            stop(process)
        if args.keep_logs:
            _keep_logs(data_dir, Path(args.keep_logs))
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


async def _measure(
    args: argparse.Namespace, machine: dict[str, Any], setup: Setup
) -> dict[str, Any]:
    """Warm, load, drain, then the ledger; prints and returns the figures."""
    base_url, processes, postmaster = setup.base_url, setup.processes, setup.postmaster
    sampler = Sampler([p.pid for p in processes[1:]], postmaster)
    sampling = asyncio.create_task(sampler.run())
    warm = await _warm(base_url, setup.store, args.clients)
    work = Workload(
        hits=setup.hits,
        data_keys=setup.data_keys,
        all_keys=setup.all_keys,
        finance_token=args.finance_token,
        month=setup.today.strftime("%Y-%m"),
        today=setup.today,
        new_share=args.new_share,
        tight_share=args.tight_share,
    )
    cpu_before, load_before = cpu_now(setup.processes, setup.postmaster), os.getloadavg()[0]
    await _mixed(base_url, work, args.clients, args.seconds, args.rate)
    cpu_after, load_after = cpu_now(setup.processes, setup.postmaster), os.getloadavg()[0]
    t0 = time.perf_counter()
    cancelled = await _drain(base_url, work.tally, args.drain_seconds)
    drain_s = time.perf_counter() - t0
    sampling.cancel()
    sampler.sample()
    ledger = await ledger_view(setup.owner_url)
    reconcile_rc, reconcile_lines = reconcile(setup.env)
    ledger["pending_after_reconcile"] = (await ledger_view(setup.owner_url))["pending"]
    for process, name in zip(processes, PROCESS_NAMES, strict=False):
        if process.poll() is not None:
            print(f"!!!!!!!! the {name} process EXITED ({process.returncode}) !!!!!!!!")

    warm_routes = print_routes(
        f"WARM-UP: {len(setup.store)} explanation scopes stored ({dict(warm.cache)})", warm
    )
    routes = print_routes(
        f"MIXED, {args.clients} clients for {args.seconds:g} s"
        + (f" paced at {args.rate:g} requests/s" if args.rate > 0 else " (closed loop)"),
        work.tally,
    )
    served = sum(work.tally.cache.values())
    hit_ratio = work.tally.cache.get("hit", 0) / max(1, served)
    print(f"  explanations: {dict(work.tally.cache)}; cache hit ratio {hit_ratio:.1%}")
    runs = run_figures(work.tally, cancelled)
    print(
        f"\nINVESTIGATIONS: {runs['created']} created; drained in {drain_s:.0f} s; "
        f"statuses {runs['statuses']}; degraded {runs['degraded']}; "
        f"cancelled by the bench after --drain-seconds: {cancelled}"
    )
    if runs["reasons"]:
        print(f"  reasons (not succeeded): {runs['reasons']}")
    print(
        f"  elapsed p50 {runs['elapsed_p50_s']} s, max {runs['elapsed_max_s']} s; max spend "
        f"${runs['spend_max_usd']}; over ceiling {len(runs['over_ceiling'])}, over time "
        f"{len(runs['over_time'])} (API); over ceiling {ledger['runs_over_ceiling']}, over "
        f"time {ledger['runs_over_time']} (database)"
    )
    loads = (load_before, load_after)
    resources = resource_figures(sampler, cpu_before, cpu_after, work.tally.wall_s, machine, loads)
    print(
        f"\nLEDGER: llm_api_calls {ledger['calls']} (spend ${ledger['spend_usd']}); pending "
        f"after the run {ledger['pending']}, after reconcile {ledger['pending_after_reconcile']}; "
        f"tenants over cap {ledger['tenants_over_cap']}; "
        f"`llm-service costs reconcile` exit code {reconcile_rc}"
    )
    for text in reconcile_lines:
        print(f"  reconcile: {text}")
    problems = find_problems(runs, ledger, reconcile_rc)
    loud(problems)
    if not problems:
        print("  no money record missing, no limit exceeded")
    log_lines = log_levels(Path(setup.env["LLM_SERVICE_DATA_DIR"]) / "service.log")
    print(f"\nservice log: {dict(log_lines['counts'])} lines by level")
    for text in log_lines["notable"][:20]:
        print(f"  {text[:400]}")
    return {
        "machine": machine,
        "warm_up": warm_routes,
        "routes": routes,
        "explanations": {"results": dict(work.tally.cache), "hit_ratio": hit_ratio},
        "investigations": runs,
        "resources": resources,
        "ledger": ledger,
        "reconcile_exit_code": reconcile_rc,
        "problems": problems,
        "service_log_levels": dict(log_lines["counts"]),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Parse the options (see --help) and run; `--stub PORT` serves the provider stub only."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the mixed phase")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests/s in all; 0 = closed loop"
    )
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--data-tenants", type=int, default=6, help="tenants with demo data")
    parser.add_argument(
        "--events", type=int, default=10_000, help="demo events per data tenant (>= 10,000)"
    )
    parser.add_argument("--weeks", type=int, default=2, help="weeks of warmed scopes")
    parser.add_argument("--new-share", type=float, default=0.1, help="explanations of new scopes")
    parser.add_argument("--tight-share", type=float, default=0.2, help="tight investigations")
    parser.add_argument("--latency-ms", type=float, default=300.0, help="the stub's latency")
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    parser.add_argument("--pool", type=int, default=10, help="the service's DB pool size")
    parser.add_argument("--worker", action="store_true", help="also run one worker process")
    parser.add_argument(
        "--finance-token", default=f"fin-{secrets.token_hex(8)}", help=argparse.SUPPRESS
    )
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the service/stub logs here")
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv or []))
    if args.stub:
        serve_stub(stub_app(_answer, args.latency_ms / 1000), args.stub)
        return None
    return asyncio.run(_run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
