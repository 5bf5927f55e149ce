"""The data fingerprint: journal lookup vs the old per-table aggregates, and what the journal costs.

Run from the repository root: `python -m bench.bench_fingerprint [--events N --sizes A,B ...]`.

An embedded PostgreSQL is started in a temporary directory (deleted afterwards) and migrated
(or, with DATABASE_URL set, a scratch database is created on that server and dropped after).

1. Ingest: the demo-data generator writes --sizes events (default 20k and 200k) for fresh
   tenants, alternately with the journal's triggers (and the ledger's allocation index, added
   with them) enabled and disabled; the medians show what journaling costs a bulk load, and
   (as a superuser) the time spent inside the journal's trigger functions, which is not at the
   mercy of a busy machine's noise.
2. Fingerprint: one tenant with --events demo events (default 300k over 90 days); as the
   application role under RLS, `data_fingerprint` (one index range scan of the journal) against
   the legacy statement it replaced (kept here as LEGACY_DATA_FINGERPRINT), 7 and 90 days, with
   and without a channel.
3. Contention: --workers concurrent single-event transactions, with and without the journal:
   all on one tenant, day and channel (they queue on that journal row until commit), on one
   tenant and day in different channels (they still queue, on the day's roll-up row), and
   spread over one tenant per worker (no shared journal row: the per-statement cost alone).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

import asyncpg

from bench.scratch_db import migrated_database
from llm_service.analytics.fingerprint_queries import (
    FINGERPRINT_PARTS,
    FINGERPRINT_SUBJECTS,
    data_fingerprint,
    fingerprint_args,
    fingerprint_sql,
    shape_of,
)
from llm_service.analytics.shared_queries import REMEDIATION_STATUSES, RUN_GRACE
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.queries import set_tenant
from llm_service.db.urls import resolve_urls
from llm_service.demo_data import generate_demo_data
from llm_service.settings import Settings
from llm_service.tenants.service import create_tenant

TODAY = date(2026, 3, 4)
LEGACY_VERSION: Final = 1

# The statement data_fingerprint ran before the journal (FINGERPRINT_VERSION 1): per table a
# count, a sum and the latest write over the period's rows. $4..$10 switch the parts on, in
# FINGERPRINT_PARTS order; $3 is an optional channel.
LEGACY_DATA_FINGERPRINT: Final = f"""
SELECT ev.n AS events, ev.cents AS events_cents,
       al.n AS allocations, al.cents AS allocations_cents, al.latest AS allocations_latest,
       le.n AS ledger, le.cents AS ledger_cents, le.latest AS ledger_latest,
       tr.n AS transitions, tr.cents AS transitions_cents, tr.latest AS transitions_latest,
       tr.ledger_latest AS transitions_ledger_latest,
       de.n AS dead_events, de.latest AS dead_events_latest,
       co.n AS corrections, co.latest AS corrections_latest,
       ru.n AS runs, ru.latest AS runs_latest
FROM
    (SELECT count(*) AS n, coalesce(sum(e.revenue_cents), 0)::bigint AS cents
       FROM attribution_events e
      WHERE $4::boolean AND e.occurred_at >= $1 AND e.occurred_at < $2
        AND ($3::text IS NULL OR e.channel = $3::text)) ev,
    (SELECT coalesce(sum(x.n), 0)::bigint AS n, coalesce(sum(x.cents), 0)::bigint AS cents,
            max(x.latest) AS latest
       FROM attribution_events e
       CROSS JOIN LATERAL (
            SELECT count(*) AS n, sum(a.allocated_revenue_cents) AS cents,
                   max(a.updated_at) AS latest
              FROM attribution_allocations a
             WHERE a.tenant_id = e.tenant_id AND a.event_id = e.id
               AND ($3::text IS NULL OR a.channel_code = $3::text)) x
      WHERE $5::boolean AND e.occurred_at >= $1 AND e.occurred_at < $2
        AND e.revenue_cents > 0) al,
    (SELECT count(*) AS n, coalesce(sum(l.amount_cents), 0)::bigint AS cents,
            max(l.updated_at) AS latest
       FROM revenue_ledger l
      WHERE $6::boolean AND l.posted_at >= $1 AND l.posted_at < $2
        AND ($3::text IS NULL OR EXISTS (
                SELECT 1 FROM attribution_allocations a
                 WHERE a.tenant_id = l.tenant_id AND a.id = l.allocation_id
                   AND a.channel_code = $3::text))) le,
    (SELECT count(*) AS n, coalesce(sum(l.amount_cents), 0)::bigint AS cents,
            max(t.transitioned_at) AS latest, max(l.updated_at) AS ledger_latest
       FROM revenue_state_transitions t
       JOIN revenue_ledger l ON l.tenant_id = t.tenant_id AND l.id = t.ledger_id
      WHERE $7::boolean AND t.transitioned_at >= $1 AND t.transitioned_at < $2
        AND ($3::text IS NULL OR EXISTS (
                SELECT 1 FROM attribution_allocations a
                 WHERE a.tenant_id = l.tenant_id AND a.id = l.allocation_id
                   AND a.channel_code = $3::text))) tr,
    (SELECT count(*) AS n, max(d.updated_at) AS latest
       FROM dead_events d
      WHERE $8::boolean AND d.remediation_status IN {REMEDIATION_STATUSES}
        AND d.ingested_at >= $1 AND d.ingested_at < $2) de,
    (SELECT count(*) AS n, max(c.corrected_at) AS latest
       FROM channel_assignment_corrections c
       LEFT JOIN attribution_allocations ca
              ON c.entity_type = 'allocation' AND ca.tenant_id = c.tenant_id
             AND ca.id = c.entity_id
       LEFT JOIN attribution_events ce
              ON ce.tenant_id = c.tenant_id
             AND ce.id = CASE WHEN c.entity_type = 'event' THEN c.entity_id ELSE ca.event_id END
      WHERE $9::boolean AND c.corrected_at >= $1
        AND (c.corrected_at < $2 OR (ce.occurred_at >= $1 AND ce.occurred_at < $2))
        AND ($3::text IS NULL OR $3::text IN (c.from_channel, c.to_channel))) co,
    (SELECT count(*) AS n, max(r.updated_at) AS latest
       FROM reconciliation_runs r
      WHERE $10::boolean AND r.created_at >= $1
        AND r.created_at < $2::timestamptz + {RUN_GRACE}) ru
"""

#: The journal's triggers, as the migration names them, and the index added with them.
JOURNAL_TRIGGERS: Final = {
    "attribution_events": ("insert", "delete"),
    "attribution_allocations": ("insert", "update", "delete"),
    "revenue_ledger": ("insert", "update", "delete"),
    "revenue_state_transitions": ("insert", "update", "delete"),
    "channel_assignment_corrections": ("insert", "update", "delete"),
    "dead_events": ("insert", "update", "delete"),
    "reconciliation_runs": ("insert", "update", "delete"),
}
LEDGER_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS idx_revenue_ledger_allocation "
    "ON revenue_ledger (tenant_id, allocation_id)"
)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def legacy_fingerprint(
    conn: asyncpg.Connection, subject: str, start: date, end: date, *, channel: str | None = None
) -> str:
    """The fingerprint as data_fingerprint computed it before the journal (same document)."""
    parts = FINGERPRINT_SUBJECTS.get(subject, frozenset(FINGERPRINT_PARTS))
    row = await conn.fetchrow(
        LEGACY_DATA_FINGERPRINT,
        _midnight(start),
        _midnight(end),
        channel,
        *(part in parts for part in FINGERPRINT_PARTS),
    )
    assert row is not None
    document = {
        "version": LEGACY_VERSION,
        "subject": subject,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "channel": channel,
        "data": {
            key: value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
            for key, value in row.items()
        },
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


async def set_journal(conn: asyncpg.Connection, enabled: bool) -> None:
    """As the owner: enable or disable the journal's triggers (and its ledger index)."""
    action = "ENABLE" if enabled else "DISABLE"
    for table, events in JOURNAL_TRIGGERS.items():
        for event in events:
            await conn.execute(f"ALTER TABLE {table} {action} TRIGGER trg_{table}_journal_{event}")
    await conn.execute(
        LEDGER_INDEX if enabled else "DROP INDEX IF EXISTS idx_revenue_ledger_allocation"
    )


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _ms(values: Sequence[float]) -> str:
    return (
        f"p50 {_pct(values, 50) * 1000:8.2f} ms  p95 {_pct(values, 95) * 1000:8.2f} ms  "
        f"max {max(values) * 1000:8.2f} ms"
    )


async def _timed(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    call: Callable[[asyncpg.Connection], Awaitable[Any]],
    repeat: int,
) -> list[float]:
    """Durations of `call` in one READ ONLY tenant transaction each (after one warm-up)."""
    durations: list[float] = []
    for i in range(repeat + 1):
        async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
            started = time.perf_counter()
            await call(conn)
            if i:
                durations.append(time.perf_counter() - started)
    return durations


# --------------------------------------------------------------------------------------------
# 1. Ingest
# --------------------------------------------------------------------------------------------


JOURNAL_TIME = """
SELECT coalesce(sum(calls), 0)::bigint AS calls, coalesce(sum(total_time), 0) / 1000 AS seconds
FROM pg_stat_xact_user_functions WHERE funcname LIKE 'fn_journal_%'
"""


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a local server process has used, or None if not readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Generation:
    """One demo-data generation: wall clock, the server backend's CPU, the journal's share."""

    seconds: float
    backend_cpu: float | None
    journal_seconds: float
    journal_calls: int


async def _generate(owner: asyncpg.Pool, events: int, seed: int) -> Generation:
    tenant = await create_tenant(owner, f"bench-{uuid.uuid4().hex[:8]}")
    async with owner.acquire() as conn:
        # Function timing needs a superuser; without it only the clocks are measured.
        timed = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if timed:
            await conn.execute("SET track_functions = 'pl'")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        cpu_before = _cpu_seconds(pid)
        started = time.perf_counter()
        async with conn.transaction():
            await set_tenant(conn, tenant.tenant_id)
            await generate_demo_data(conn, tenant.tenant_id, events=events, seed=seed, today=TODAY)
            inside = await conn.fetchrow(JOURNAL_TIME) if timed else None
        elapsed = time.perf_counter() - started
        cpu_after = _cpu_seconds(pid)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Generation(
        elapsed,
        cpu,
        float(inside["seconds"]) if inside else 0.0,
        int(inside["calls"]) if inside else 0,
    )


async def bench_ingest(owner: asyncpg.Pool, sizes: Sequence[int], rounds: int) -> None:
    print("\n-- 1. demo-data generation, journal off vs on (alternating; medians)")
    for size in sizes:
        runs: dict[bool, list[Generation]] = {False: [], True: []}
        for r in range(rounds):
            for enabled in (False, True) if r % 2 == 0 else (True, False):
                async with owner.acquire() as conn:
                    await set_journal(conn, enabled)
                runs[enabled].append(await _generate(owner, size, seed=100 + r))
        wall = {mode: [g.seconds for g in gens] for mode, gens in runs.items()}
        off, on = statistics.median(wall[False]), statistics.median(wall[True])
        each = {mode: " ".join(f"{t:.1f}" for t in times) for mode, times in wall.items()}
        print(
            f"{size:>9,} events: wall clock  off {off:7.2f} s  on {on:7.2f} s  "
            f"{100 * (on / off - 1):+6.1f} %   (off: {each[False]}; on: {each[True]})"
        )
        cpu = {mode: [g.backend_cpu for g in gens if g.backend_cpu is not None]
               for mode, gens in runs.items()}  # fmt: skip
        if cpu[False] and cpu[True]:
            off, on = statistics.median(cpu[False]), statistics.median(cpu[True])
            print(
                f"{'':>17} server CPU  off {off:7.2f} s  on {on:7.2f} s  "
                f"{100 * (on / off - 1):+6.1f} %"
            )
        calls = runs[True][-1].journal_calls
        if calls:
            share = statistics.median(g.journal_seconds / g.seconds for g in runs[True])
            inside = statistics.median(g.journal_seconds for g in runs[True])
            print(
                f"{'':>17} inside the journal's trigger functions: {inside:.2f} s, "
                f"{100 * share:.1f} % of the wall clock ({calls} calls per run)"
            )
    async with owner.acquire() as conn:
        await set_journal(conn, True)


# --------------------------------------------------------------------------------------------
# 2. Fingerprint
# --------------------------------------------------------------------------------------------


async def bench_fingerprint(
    owner: asyncpg.Pool, app: asyncpg.Pool, events: int, repeat: int, legacy_repeat: int
) -> None:
    print(f"\n-- 2. data_fingerprint on {events:,} demo events over 90 days (as the app role)")
    tenant = await create_tenant(owner, f"bench-fp-{uuid.uuid4().hex[:8]}")
    started = time.perf_counter()
    async with tenant_transaction(owner, tenant.tenant_id) as conn:
        summary = await generate_demo_data(
            conn, tenant.tenant_id, events=events, seed=7, today=TODAY
        )
    print(f"generated in {time.perf_counter() - started:.1f} s: {summary.table_counts()}")
    async with owner.acquire() as conn:
        await conn.execute("VACUUM ANALYZE")
        journal = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT (part, day)) AS part_days "
            "FROM data_change_journal WHERE tenant_id = $1",
            tenant.tenant_id,
        )
    assert journal is not None
    print(f"journal: {journal['n']} rows ({journal['part_days']} part-days) for this tenant")

    week_end = TODAY - timedelta(days=TODAY.weekday())  # Monday of this week
    periods = {"7 days": (week_end - timedelta(days=7), week_end),
               "90 days": (TODAY - timedelta(days=90), TODAY)}  # fmt: skip
    cases = [
        ("channel_performance", None),
        ("channel_performance", "facebook_paid"),
        ("reconciliation_status", None),
        ("everything", None),
    ]
    for label, (start, end) in periods.items():
        for subject, channel in cases:
            call = partial(data_fingerprint, subject=subject, start=start, end=end,
                           channel=channel)  # fmt: skip
            legacy = partial(legacy_fingerprint, subject=subject, start=start, end=end,
                             channel=channel)  # fmt: skip
            new = await _timed(app, tenant.tenant_id, call, repeat)
            old = await _timed(app, tenant.tenant_id, legacy, legacy_repeat)
            name = f"{label:>7} {subject}" + (f" [{channel}]" if channel else "")
            print(f"{name:<48} journal  {_ms(new)}")
            print(f"{'':<48} legacy   {_ms(old)}   ({_pct(old, 50) / _pct(new, 50):,.0f}x)")
    start, end = periods["90 days"]
    async with tenant_transaction(app, tenant.tenant_id, readonly=True) as conn:
        args = fingerprint_args("every part", [(start, end)])
        plan = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON) " + fingerprint_sql(shape_of(args)),
            *args,
        )
    print("plan, 90 days, every part:\n    " + "\n    ".join(r[0] for r in plan))


# --------------------------------------------------------------------------------------------
# 3. Contention
# --------------------------------------------------------------------------------------------

INSERT_EVENT = """
INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type, channel,
                                idempotency_key)
VALUES ($1, $2, $2, 'click', $3, gen_random_uuid()::text)
"""
CHANNELS: Final = ("email", "direct", "sms", "referral", "affiliate", "organic_search",
                   "organic_social", "facebook_paid", "google_shopping")  # fmt: skip


async def _hammer(
    app: asyncpg.Pool, workers: Sequence[tuple[uuid.UUID, str]], seconds: float
) -> tuple[int, list[float]]:
    """Each worker: single-event transactions on its tenant and channel until time is up."""
    deadline = time.perf_counter() + seconds
    when = datetime(2026, 3, 2, 12, tzinfo=UTC)
    latencies: list[float] = []

    async def worker(tenant_id: uuid.UUID, channel: str) -> int:
        done = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with tenant_transaction(app, tenant_id) as conn:
                await conn.execute(INSERT_EVENT, tenant_id, when, channel)
            latencies.append(time.perf_counter() - started)
            done += 1
        return done

    counts = await asyncio.gather(*(worker(t, channel) for t, channel in workers))
    return sum(counts), latencies


async def bench_contention(
    owner: asyncpg.Pool, app: asyncpg.Pool, workers: int, seconds: float
) -> None:
    print(f"\n-- 3. {workers} concurrent single-event transactions, {seconds:.0f} s each")
    shared = (await create_tenant(owner, f"bench-hot-{uuid.uuid4().hex[:6]}")).tenant_id
    spread = [
        (await create_tenant(owner, f"bench-cold-{uuid.uuid4().hex[:6]}")).tenant_id
        for _ in range(workers)
    ]
    for enabled in (False, True):
        async with owner.acquire() as conn:
            await set_journal(conn, enabled)
        cases = {
            "one tenant, day, channel": [(shared, "email")] * workers,
            "one tenant and day": [(shared, CHANNELS[i % len(CHANNELS)]) for i in range(workers)],
            "one tenant per worker": [(t, "email") for t in spread],
        }
        for label, load in cases.items():
            n, latencies = await _hammer(app, load, seconds)
            print(
                f"journal {'on ' if enabled else 'off'}  {label:<25} {n / seconds:8.0f} tx/s   "
                f"{_ms(latencies)}"
            )
    async with owner.acquire() as conn:
        await set_journal(conn, True)


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace) -> None:
    async with migrated_database("bench_fp") as owner_url:
        urls = resolve_urls(Settings(), owner_url)
        timeout = 30 * 60 * 1000
        owner = await create_pool(
            owner_url, application_name="bench-fp-owner", max_size=4, statement_timeout_ms=timeout
        )
        app = await create_pool(
            urls.app, application_name="bench-fp", max_size=max(4, args.workers)
        )
        try:
            async with owner.acquire() as conn:
                print(await conn.fetchval("SELECT version()"))
            if args.sizes:
                await bench_ingest(owner, args.sizes, args.rounds)
            if args.events:
                await bench_fingerprint(owner, app, args.events, args.repeat, args.legacy_repeat)
            if args.workers:
                await bench_contention(owner, app, args.workers, args.seconds)
        finally:
            await app.close()
            await owner.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options and run (defaults: 20k/200k ingest x4, 300k fingerprint, 8 workers)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(x) for x in text.split(",") if x],
        default=[20_000, 200_000],
        help="demo-data sizes for the ingest comparison (comma-separated; empty to skip)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="runs per size and mode")
    parser.add_argument("--events", type=int, default=300_000, help="0 to skip part 2")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--legacy-repeat", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8, help="0 to skip part 3")
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(_run(parser.parse_args(list(argv or []))))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
