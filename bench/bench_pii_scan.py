"""The incremental PII scan: its cost per 100k new rows, against the full rescan it replaced.

Run from the repository root: `python -m bench.bench_pii_scan [--events N --batch B ...]`.
An embedded PostgreSQL 18 is started in a temporary directory (deleted afterwards), or, with
DATABASE_URL set (e.g. the PostgreSQL 15 cluster of `make test-pg15`), a scratch database is
created on that server and dropped afterwards.

1. Realistic: --events demo events (default 100k; ~0.5% of payloads hold personal data, nested)
   for one tenant, then the queue drained by `llm_service.pii.scan.drain` as the application
   role, batch by batch; then the legacy full rescan (migration 002's statement) over the same
   tables, which every run of the old scan paid whatever was new.
2. Worst case: --events rows whose every payload holds a nested personal key, inserted in one
   statement, then drained.
3. Steady state: a scan with nothing new, and one with 1,000 new rows, after all the above.
4. Write path: what queueing adds to an INSERT of --insert-rows rows (triggers on vs off).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence

import asyncpg

from bench.scratch_db import migrated_database
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import resolve_urls
from llm_service.demo_data import generate_demo_data
from llm_service.pii.scan import ScanReport, drain
from llm_service.settings import Settings
from llm_service.tenants.service import create_tenant

# What every run of the old fn_scan_pii_contamination() did, whatever was new (migration 002).
LEGACY_FULL_RESCAN = [
    f"""INSERT INTO pii_audit_findings (tenant_id, source, table_name, column_name, record_id,
                                     detected_key, finding_kind, redacted_snippet)
        SELECT s.tenant_id, 'scan', '{table}', '{column}', s.id, p.path, 'personal_key',
               p.key || ': [REDACTED]'
        FROM {table} s CROSS JOIN LATERAL fn_jsonb_personal_paths(s.{column}) p
        ON CONFLICT DO NOTHING"""
    for table, column in (
        ("attribution_events", "raw_payload"),
        ("dead_events", "raw_payload"),
        ("revenue_ledger", "metadata"),
    )
]

QUEUE = "trg_attribution_events_pii_queue_insert"
SYNTHETIC_INSERT = """
INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type, channel,
                                revenue_cents, raw_payload, idempotency_key)
SELECT $1, now(), now(), 'page_view', 'facebook_paid', 0,
       jsonb_build_object(
           'schema_version', 3, 'source', 'web_sdk',
           'event', jsonb_build_object('name', 'page_view', 'ts', now()),
           'page', jsonb_build_object('path', '/p/' || i, 'referrer', null),
           'device', jsonb_build_object('os', 'Android', 'type', 'mobile', 'browser', 'Chrome'),
           'context', jsonb_build_object(
               'locale', 'en-US',
               'customer', CASE WHEN $3 THEN jsonb_build_object('email', 'u' || i || '@x.test')
                                ELSE jsonb_build_object('tier', 'gold') END)),
       $4 || i
FROM generate_series(1, $2) AS i
"""


def _per_100k(seconds: float, rows: int) -> str:
    return f"{seconds / rows * 100_000:.2f} s per 100k rows" if rows else "n/a"


async def _drain(app: asyncpg.Pool, batch: int) -> tuple[ScanReport, float]:
    async with app.acquire() as conn:
        started = time.perf_counter()
        report = await drain(conn, batch_size=batch)
        return report, time.perf_counter() - started


def _show(label: str, report: ScanReport, seconds: float) -> None:
    print(
        f"{label}: {report.scanned} rows in {report.batches} batches, {report.findings} findings,"
        f" {seconds:.2f} s = {_per_100k(seconds, report.scanned)}"
        f" ({seconds / report.batches * 1000:.0f} ms per batch)",
        flush=True,
    )


async def _insert(owner: asyncpg.Pool, tenant: uuid.UUID, rows: int, pii: bool) -> float:
    async with tenant_transaction(owner, tenant) as conn:
        started = time.perf_counter()
        await conn.execute(SYNTHETIC_INSERT, tenant, rows, pii, f"b-{uuid.uuid4().hex[:8]}-")
        return time.perf_counter() - started


async def _write_path(owner: asyncpg.Pool, tenant: uuid.UUID, rows: int, rounds: int) -> None:
    timings: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for queued in (True, False):
            if not queued:
                async with owner.acquire() as conn:
                    await conn.execute(f"ALTER TABLE attribution_events DISABLE TRIGGER {QUEUE}")
            try:
                timings[queued].append(await _insert(owner, tenant, rows, False))
            finally:
                async with owner.acquire() as conn:
                    await conn.execute(f"ALTER TABLE attribution_events ENABLE TRIGGER {QUEUE}")
    on, off = statistics.median(timings[True]), statistics.median(timings[False])
    print(
        f"write path: INSERT of {rows} rows {on:.2f} s queued vs {off:.2f} s without"
        f" (medians of {rounds}): +{(on - off) / rows * 1e6:.1f} us per row",
        flush=True,
    )


async def _run(args: argparse.Namespace) -> None:
    async with migrated_database("bench_pii") as owner_url:
        urls = resolve_urls(Settings(), owner_url)
        owner = await create_pool(
            owner_url, application_name="bench-pii-owner", max_size=2, statement_timeout_ms=0
        )
        app = await create_pool(urls.app, application_name="bench-pii", max_size=2)
        try:
            async with owner.acquire() as conn:
                print(await conn.fetchval("SELECT version()"), flush=True)
            tenant = (await create_tenant(owner, f"bench-pii-{uuid.uuid4().hex[:6]}")).tenant_id
            async with tenant_transaction(owner, tenant) as conn:
                summary = await generate_demo_data(conn, tenant, events=args.events)
            print(f"demo data: {args.events} events, {summary.pii_payloads} with PII", flush=True)
            _show("realistic (demo data)", *await _drain(app, args.batch))

            async with owner.acquire() as conn:
                started = time.perf_counter()
                for statement in LEGACY_FULL_RESCAN:
                    await conn.execute(statement)
                legacy = time.perf_counter() - started
            print(
                f"legacy full rescan of the same tables: {legacy:.2f} s"
                f" (paid again by every run, even with nothing new)",
                flush=True,
            )

            other = (await create_tenant(owner, f"bench-pii-{uuid.uuid4().hex[:6]}")).tenant_id
            await _insert(owner, other, args.events, True)
            _show("worst case (every row holds PII)", *await _drain(app, args.batch))

            _show("nothing new", *await _drain(app, args.batch))
            await _insert(owner, other, 1_000, True)
            _show("1,000 new rows on the full tables", *await _drain(app, args.batch))

            if args.insert_rows:
                await _write_path(owner, other, args.insert_rows, args.rounds)
        finally:
            await app.close()
            await owner.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options and run (defaults: 100k rows, batches of 1000, 20k-row inserts x3)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="rows per scenario")
    parser.add_argument("--batch", type=int, default=1000, help="rows per scan batch")
    parser.add_argument("--insert-rows", type=int, default=20_000, help="0 = skip the write path")
    parser.add_argument("--rounds", type=int, default=3, help="write-path rounds")
    asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
