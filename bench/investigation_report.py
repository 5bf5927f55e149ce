"""bench_investigations' report: phases, statuses, spend, leases and the verdict, printed."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections import Counter

import asyncpg

from bench.investigation_figures import MAX_COST_CENTS, TERMINAL, Probe, _ms, _peak_rss_mib, _q, _s


def _what_ifs(args: argparse.Namespace) -> str:
    changes = []
    if args.what_if_claim_batch > 0:
        changes.append(f"claims batched by {args.what_if_claim_batch}")
    if args.what_if_no_reset:
        changes.append("no reset query on release")
    return f" [WHAT-IF: {', '.join(changes)}]" if changes else ""


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
    leases: tuple[int, int, int],
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
        f"provider latency {args.latency_ms:g} ms, script {args.script}, {os.cpu_count()} CPUs"
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
    leases_lost, heartbeat_rounds, heartbeat_retries = leases
    print(
        f"  leases: {leases_lost} lost; {heartbeat_rounds} batched renewals (one statement "
        f"each, on the keeper's own connection), {heartbeat_retries} of them retries of runs a "
        "round skipped (row locked)"
    )
    if traces:
        last_claim = max(t.claimed for t in traces) - started
        first_end = min(t.finished for t in traces) - started
        print(
            f"  last claim {last_claim:.2f} s after the start, first run ended at "
            f"{first_end:.2f} s: all claimed before the first finish: "
            f"{'yes' if last_claim < first_end else 'NO'}"
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
