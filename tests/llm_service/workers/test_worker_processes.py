"""Workers as real OS processes sharing one queue: no run twice, none left running after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from uuid import UUID

import asyncpg
import pytest

from llm_service.db.pool import encode_json, tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.tenants.service import CreatedTenant, create_tenant
from tests.helpers import waiting


def _worker_env(urls: DatabaseUrls, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLM_MODEL", "LLM_API_BASE")}
    env.update(
        {
            "DATABASE_URL": urls.owner,
            "APP_DATABASE_URL": urls.app,
            "WORKER_LEASE_S": "2",
            "WORKER_CONCURRENCY": "10",
            **extra,
        }
    )
    return env


def start_worker(urls: DatabaseUrls, **extra: str) -> subprocess.Popen[bytes]:
    """`llm-service worker` in its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "llm_service.cli", "worker"],
        env=_worker_env(urls, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def queue_runs(pool: asyncpg.Pool, tenant_id: UUID, count: int, question: str) -> list[UUID]:
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await conn.fetch(
            "INSERT INTO investigations (tenant_id, question, timeout_ms) "
            "SELECT $1, $2 || ' #' || g, 20000 FROM generate_series(1, $3) g RETURNING id",
            tenant_id,
            question,
            count,
        )
    return [r["id"] for r in rows]


async def wait_until(
    predicate_sql: str, pool: asyncpg.Pool, tenant_id: UUID, timeout: float
) -> None:
    async def holds() -> bool:
        async with tenant_transaction(pool, tenant_id) as conn:
            return bool(await conn.fetchval(predicate_sql))

    await waiting.wait_until(holds, predicate_sql, timeout=timeout)


async def test_three_workers_run_a_hundred_queued_runs_each_exactly_once(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool
) -> None:
    tenant = await create_tenant(owner_pool, "busy")
    ids = await queue_runs(app_pool, tenant.tenant_id, 100, "What changed in channel performance?")
    workers = [start_worker(database_urls) for _ in range(3)]
    try:
        await wait_until(
            "SELECT count(*) = 100 FROM investigations WHERE status NOT IN ('queued', 'running')",
            app_pool,
            tenant.tenant_id,
            timeout=120,
        )
    finally:
        for proc in workers:
            stop(proc)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        runs = await conn.fetch("SELECT id, status, attempts FROM investigations")
        started = await conn.fetch(
            "SELECT investigation_id, count(*) AS n, count(DISTINCT data ->> 'worker') AS workers "
            "FROM investigation_events WHERE event_type = 'started' GROUP BY 1"
        )
        finals = await conn.fetchval(
            "SELECT count(*) FROM investigation_events WHERE event_type = 'final'"
        )
        per_run_tools = await conn.fetch(
            "SELECT investigation_id, count(*) AS n FROM investigation_tool_calls GROUP BY 1"
        )
    assert {r["id"] for r in runs} == set(ids)
    assert all(r["status"] == "succeeded" for r in runs)
    assert all(r["attempts"] == 1 for r in runs), "a run was claimed twice"
    assert len(started) == 100 and all(s["n"] == 1 for s in started), "a run executed twice"
    assert finals == 100
    # The same plan ran once per run: identical tool counts, never doubled.
    assert len({r["n"] for r in per_run_tools}) == 1
    # The work was shared between processes.
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        owners = await conn.fetchval(
            "SELECT count(DISTINCT data ->> 'worker') FROM investigation_events "
            "WHERE event_type = 'started'"
        )
    assert owners >= 2


class _StallingProvider(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that never answers in time."""

    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(20)  # the stalled provider is the behaviour under test
        try:
            self.send_response(503)
            self.end_headers()
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stalling_provider() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StallingProvider)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


async def test_a_run_whose_worker_is_killed_is_ended_by_another_worker(
    database_urls: DatabaseUrls,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    stalling_provider: str,
) -> None:
    tenant: CreatedTenant = await create_tenant(owner_pool, "crashy")
    [run_id] = await queue_runs(app_pool, tenant.tenant_id, 1, "Why did revenue fall last week?")
    victim = start_worker(
        database_urls,
        LLM_MODEL="openai/gpt-4o-mini",
        LLM_API_BASE=stalling_provider,
        OPENAI_API_KEY="sk-test",
        LLM_REQUEST_TIMEOUT_S="30",
    )
    try:
        # Mid-call: the run is running and its provider call is pending in the ledger.
        await wait_until(
            f"SELECT count(*) > 0 FROM llm_api_calls WHERE investigation_id = '{run_id}' "
            "AND status = 'pending'",
            app_pool,
            tenant.tenant_id,
            timeout=60,
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        assert (
            await conn.fetchval("SELECT status FROM investigations WHERE id = $1", run_id)
            == "running"
        )
    rescuer = start_worker(database_urls)
    try:
        await wait_until(
            f"SELECT status <> 'running' FROM investigations WHERE id = '{run_id}'",
            app_pool,
            tenant.tenant_id,
            timeout=60,
        )
    finally:
        stop(rescuer)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        run = await conn.fetchrow("SELECT * FROM investigations WHERE id = $1", run_id)
        events = [
            encode_json(e["data"])
            for e in await conn.fetch(
                "SELECT data FROM investigation_events WHERE investigation_id = $1 ORDER BY seq",
                run_id,
            )
        ]
    assert run["status"] == "failed"
    assert "lease expired" in run["reason"]
    assert run["attempts"] == 2
    assert any("stopped" in e for e in events)
