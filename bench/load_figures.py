"""bench_load's measuring: client tallies, peak memory, the ledger after the run, the report.

Not a benchmark itself (`bench/__main__.py` runs only `bench_*.py`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.harness import ROOT, Memory, memory, pct, tree
from bench.investigation_figures import TERMINAL, _machine_busy_s, _postgres_cpu_s

# -- what the clients record ----------------------------------------------------------------------


@dataclass
class RouteStats:
    """One route's client-side latencies (s) and outcomes (status code or exception name)."""

    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    server_ms: list[float] = field(default_factory=list)  # X-Server-Time-Ms, where sent

    @property
    def errors(self) -> dict[str, int]:
        """Outcomes other than 2xx."""
        return {k: v for k, v in self.outcomes.items() if not k.startswith("2")}


@dataclass
class Tally:
    """What a phase measured, plus the investigations created and their latest state."""

    routes: dict[str, RouteStats] = field(default_factory=lambda: defaultdict(RouteStats))
    cache: Counter[str] = field(default_factory=Counter)
    runs: dict[str, str] = field(default_factory=dict)  # investigation id -> its tenant's key
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_s: float = 0.0

    def record(self, route: str, outcome: str, elapsed: float) -> None:
        """One request's outcome and latency."""
        stats = self.routes[route]
        stats.latencies.append(elapsed)
        stats.outcomes[outcome] += 1

    def count_explanation(self, response: httpx.Response | None) -> None:
        """Count an explanation's result: a hit, a miss or degraded."""
        if response is not None:
            answer = response.json()
            self.cache["degraded" if answer["degraded"] else answer["cache"]] += 1

    def unfinished(self) -> list[str]:
        """The investigations not yet seen in a terminal state."""
        return [i for i in self.runs if self.state.get(i, {}).get("status") not in TERMINAL]


async def send(
    http: httpx.AsyncClient,
    tally: Tally,
    route: str,
    method: str,
    url: str,
    token: str,
    **kwargs: Any,
) -> httpx.Response | None:
    """One request, recorded; the response when it succeeded."""
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    try:
        response = await http.request(method, url, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        tally.record(route, type(exc).__name__, time.perf_counter() - started)
        return None
    tally.record(route, str(response.status_code), time.perf_counter() - started)
    if "x-server-time-ms" in response.headers:
        tally.routes[route].server_ms.append(float(response.headers["x-server-time-ms"]))
    return response if response.is_success else None


# -- processes' CPU and memory ---------------------------------------------------------------

PROCESS_NAMES = ("stub", "service", "worker")  # the order bench_load starts them in


def cpu_now(
    processes: list[subprocess.Popen[bytes]], postmaster: int | None
) -> dict[str, float | None]:
    """CPU seconds used so far: each process we run (with its children), and the machine's."""
    # bench_investigations' _postgres_cpu_s(pid) sums any process and its direct children.
    now = {
        name: _postgres_cpu_s(process.pid)
        for name, process in zip(PROCESS_NAMES, processes, strict=False)
    }
    now["postgres"] = _postgres_cpu_s(postmaster)
    now["bench clients"] = time.process_time()
    now["machine"] = _machine_busy_s()
    return now


@dataclass
class Sampler:
    """Peak memory of the service's process trees and of PostgreSQL's, sampled every second."""

    service_pids: list[int]
    postmaster: int | None
    service_rss_mib: float = 0.0  # the largest sum of VmRSS over the service's processes
    pg_private_mib: float = 0.0  # the largest sum of RssAnon over PostgreSQL's processes
    pg_shared_mib: float = 0.0  # the largest RssShmem of one PostgreSQL process
    pg_processes: int = 0
    service_hwm: dict[int, float] = field(default_factory=dict)  # pid -> VmHWM
    pg_hwm_mib: float = 0.0  # the largest VmHWM of one PostgreSQL process

    def sample(self) -> None:
        """One sample of both trees."""
        service = memory(pid for root in self.service_pids for pid in tree(root))
        self.service_rss_mib = max(self.service_rss_mib, sum(m.rss for m in service))
        for m in service:
            self.service_hwm[m.pid] = max(self.service_hwm.get(m.pid, 0.0), m.hwm)
        if self.postmaster is not None:
            self._sample_pg(memory(tree(self.postmaster)))

    def _sample_pg(self, pg: list[Memory]) -> None:
        self.pg_private_mib = max(self.pg_private_mib, sum(m.anon for m in pg))
        self.pg_shared_mib = max([self.pg_shared_mib, *(m.shmem for m in pg)])
        self.pg_hwm_mib = max([self.pg_hwm_mib, *(m.hwm for m in pg)])
        self.pg_processes = max(self.pg_processes, len(pg))

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(1.0)


# -- the ledger after the run ----------------------------------------------------------------------

LEDGER_QUERIES = {
    "pending": "SELECT count(*) FROM llm_api_calls WHERE status = 'pending'",
    "runs_not_terminal": f"SELECT count(*) FROM investigations WHERE status NOT IN {TERMINAL}",
    "runs_over_ceiling": """
        SELECT count(*) FROM investigations i
        WHERE i.cost_cents > i.max_cost_cents
           OR (SELECT coalesce(sum(c.cost_cents), 0) FROM llm_api_calls c
                WHERE c.investigation_id = i.id) > i.max_cost_cents""",
    "runs_over_time": "SELECT count(*) FROM investigations WHERE elapsed_ms > timeout_ms",
    "tenants_over_cap": """
        SELECT count(*) FROM llm_monthly_costs m JOIN tenants t ON t.id = m.tenant_id
        WHERE m.total_cost_cents > t.monthly_cap_cents""",
}


async def ledger_view(owner_url: str) -> dict[str, Any]:
    """The database's view, as the owner (a superuser here: row-level security does not apply)."""
    conn = await asyncpg.connect(owner_url)
    try:
        found: dict[str, Any] = {k: await conn.fetchval(q) for k, q in LEDGER_QUERIES.items()}
        if found["pending"]:
            # A shielded settle may still be finishing: look again.
            await asyncio.sleep(3)
            found["pending"] = await conn.fetchval(LEDGER_QUERIES["pending"])
        rows = await conn.fetch("SELECT status, count(*) AS n FROM llm_api_calls GROUP BY status")
        found["calls"] = {r["status"]: r["n"] for r in rows}
        cents = await conn.fetchval("SELECT coalesce(sum(cost_cents), 0) FROM llm_api_calls")
        found["spend_usd"] = f"{(cents / 100).normalize():f}"
    finally:
        await conn.close()
    return found


def reconcile(env: dict[str, str]) -> tuple[int, list[str]]:
    """`llm-service costs reconcile` against the same database: exit code, summary lines."""
    done = subprocess.run(
        [sys.executable, "-m", "llm_service.cli", "costs", "reconcile"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stdout.splitlines()
    keep = [ln for ln in lines if ln.endswith(("DIFFERENCE", "difference", "differences", "first"))]
    return done.returncode, keep + done.stderr.splitlines()[-5:]


# -- the report ---------------------------------------------------------------------------------


def route_figures(tally: Tally) -> dict[str, dict[str, Any]]:
    """Per route: requests, throughput, latency percentiles (ms), errors by status."""
    figures = {}
    for route, stats in sorted(tally.routes.items()):
        n = len(stats.latencies)
        ms = [x * 1000 for x in stats.latencies]
        errors = stats.errors
        figures[route] = {
            "requests": n,
            "per_s": n / tally.wall_s if tally.wall_s else 0.0,
            "p50_ms": pct(ms, 50),
            "p95_ms": pct(ms, 95),
            "p99_ms": pct(ms, 99),
            "errors": sum(errors.values()),
            "error_rate": sum(errors.values()) / n,
            "errors_by_status": errors,
            "server_p50_ms": pct(stats.server_ms, 50) if stats.server_ms else None,
            "server_p95_ms": pct(stats.server_ms, 95) if stats.server_ms else None,
        }
    return figures


def print_routes(title: str, tally: Tally) -> dict[str, dict[str, Any]]:
    """A table of the routes of one phase."""
    figures = route_figures(tally)
    total = sum(f["requests"] for f in figures.values())
    errors = sum(f["errors"] for f in figures.values())
    print(
        f"\n{title}: {total} requests in {tally.wall_s:.1f} s = {total / tally.wall_s:.1f}/s, "
        f"errors {errors} ({errors / max(1, total):.2%})"
    )
    print(f"  {'route':<45}{'n':>7}{'/s':>8}{'p50':>9}{'p95':>9}{'p99':>9}  errors")
    for route, f in figures.items():
        print(
            f"  {route:<45}{f['requests']:>7}{f['per_s']:>8.1f}{f['p50_ms']:>9.1f}"
            f"{f['p95_ms']:>9.1f}{f['p99_ms']:>9.1f}  "
            f"{f['errors']} ({f['error_rate']:.1%}) {f['errors_by_status'] or ''}"
        )
        if f["server_p50_ms"] is not None:
            print(
                f"    (server-side, X-Server-Time-Ms: p50 {f['server_p50_ms']:.1f}, "
                f"p95 {f['server_p95_ms']:.1f} ms)"
            )
    return figures


def run_figures(tally: Tally, cancelled: int) -> dict[str, Any]:
    """Investigations as the API last showed them: statuses, limits passed."""
    runs = [tally.state[i] for i in tally.runs if i in tally.state]
    over_ceiling = [r["id"] for r in runs if Decimal(r["cost_usd"]) > Decimal(r["max_cost_usd"])]
    over_time = [
        r["id"] for r in runs if r["elapsed_s"] is not None and r["elapsed_s"] > r["timeout_s"]
    ]
    elapsed = [r["elapsed_s"] for r in runs if r["elapsed_s"] is not None]
    return {
        "created": len(tally.runs),
        "statuses": dict(Counter(r["status"] for r in runs)),
        "degraded": sum(1 for r in runs if r["degraded"]),
        "reasons": dict(Counter(r["reason"] for r in runs if r["status"] != "succeeded")),
        "cancelled_by_bench": cancelled,
        "over_ceiling": over_ceiling,
        "over_time": over_time,
        "elapsed_p50_s": pct(elapsed, 50) if elapsed else None,
        "elapsed_max_s": max(elapsed, default=None),
        "spend_max_usd": str(max((Decimal(r["cost_usd"]) for r in runs), default=Decimal(0))),
    }


def loud(problems: list[str]) -> None:
    """Print what must never happen, impossible to miss."""
    for problem in problems:
        print(f"!!!!!!!! {problem} !!!!!!!!")


def find_problems(runs: dict[str, Any], ledger: dict[str, Any], reconcile_rc: int) -> list[str]:
    """Missing money records and exceeded limits, in words."""
    checks = [
        (ledger["pending"], "llm_api_calls rows still PENDING after the run (money unrecorded)"),
        (reconcile_rc, "`llm-service costs reconcile` exit code (a monthly total differs)"),
        (len(runs["over_ceiling"]), "investigations OVER THEIR COST CEILING (API)"),
        (len(runs["over_time"]), "investigations OVER THEIR TIMEOUT (API)"),
        (ledger["runs_over_ceiling"], "investigations OVER THEIR COST CEILING (ledger)"),
        (ledger["runs_over_time"], "investigations OVER THEIR TIMEOUT (database)"),
        (ledger["runs_not_terminal"], "investigations NOT TERMINAL after the drain"),
        (ledger["tenants_over_cap"], "tenants OVER THEIR MONTHLY CAP"),
    ]
    return [f"{value} {what}" for value, what in checks if value]


def log_levels(log: Path) -> dict[str, Any]:
    """The service's JSON log lines counted by level, and those above info."""
    counts: Counter[str] = Counter()
    notable = []
    for text in log.read_text(errors="replace").splitlines():
        try:
            level = str(json.loads(text).get("level", "?"))
        except ValueError:
            level = "unstructured"
        counts[level] += 1
        if level not in ("info", "debug"):
            notable.append(text)
    return {"counts": counts, "notable": notable}


def machine_now() -> dict[str, Any]:
    """The machine, as it was before the run."""
    return {
        "nproc": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": sys.version.split()[0],
        "mem_total_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
    }


def resource_figures(
    sampler: Sampler,
    before: dict[str, float | None],
    after: dict[str, float | None],
    wall: float,
    machine: dict[str, Any],
    loads: tuple[float, float],
) -> dict[str, Any]:
    """Memory peaks and CPU use during the mixed phase; printed."""
    cpu = {
        name: (after[name] or 0.0) - (before[name] or 0.0)
        for name in after
        if before[name] is not None and after[name] is not None
    }
    busy = cpu.pop("machine", None)
    figures = {
        "service_vmhwm_mib": dict(sampler.service_hwm),
        "service_rss_peak_mib": sampler.service_rss_mib,
        "pg_private_peak_mib": sampler.pg_private_mib,
        "pg_shared_mib": sampler.pg_shared_mib,
        "pg_process_hwm_max_mib": sampler.pg_hwm_mib,
        "pg_processes_max": sampler.pg_processes,
        "cpu_s": {**cpu, "machine": busy},
        "loadavg_during": loads,
    }
    hwm = ", ".join(f"pid {pid}: {mib:.0f} MiB" for pid, mib in sampler.service_hwm.items())
    print(
        f"\nMEMORY: service VmHWM {hwm} (largest summed VmRSS {sampler.service_rss_mib:.0f} MiB); "
        f"PostgreSQL: up to {sampler.pg_processes} processes, private memory (RssAnon summed) "
        f"peak {sampler.pg_private_mib:.0f} MiB + shared {sampler.pg_shared_mib:.0f} MiB, "
        f"largest process VmHWM {sampler.pg_hwm_mib:.0f} MiB"
    )
    if busy is not None:
        available = wall * (machine["nproc"] or 1)
        others = busy - sum(cpu.values())
        print(
            f"CPU during the mixed phase ({wall:.0f} s x {machine['nproc']} CPUs = "
            f"{available:.0f} CPU-s): "
            + ", ".join(f"{name} {value:.0f} s" for name, value in cpu.items())
            + f"; whole machine {busy:.0f} s busy, of which other processes {others:.0f} s; "
            f"load average {loads[0]:.2f} -> {loads[1]:.2f}"
        )
    return figures
