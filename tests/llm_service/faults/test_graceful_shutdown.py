"""SIGTERM to the real service: runs in flight finish within the grace; the rest are handed back
(their lease ended at once) and another worker ends them without waiting out a lease."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx
import pytest
from service_process import (
    QUESTION,
    ServiceProcess,
    assert_promise_kept,
    running_provider,
    wait_for,
    wait_until_all_runs_end,
)

from llm_service.db.urls import DatabaseUrls
from llm_service.tenants.service import create_tenant

pytestmark = pytest.mark.timeout(180)


async def _start_run(service: ServiceProcess, api_key: str) -> str:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
        response = await http.post(
            "/v1/investigations",
            json={"question": QUESTION},
            headers={"Authorization": f"Bearer {api_key}"},
        )
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    return run_id


async def _wait_mid_call(owner: asyncpg.Pool, run_id: str) -> None:
    async def mid_call() -> bool:
        pending: bool = await owner.fetchval(
            "SELECT count(*) > 0 FROM llm_api_calls WHERE investigation_id = $1 "
            "AND status = 'pending'",
            UUID(run_id),
        )
        return pending

    await wait_for(mid_call, timeout=60, what="the run's provider call")


async def _stopped_within(service: ServiceProcess, seconds: float) -> None:
    """SIGTERM, then wait for the process to exit (a safety net of `seconds`)."""
    assert service.process is not None
    service.process.terminate()
    await asyncio.to_thread(service.process.wait, seconds)
    # uvicorn re-raises SIGTERM after its shutdown; the CLI turns that into a clean exit.
    assert service.process.returncode == 0, service.tail()
    assert "Application shutdown complete" in service.tail(), service.tail()


async def test_sigterm_lets_a_run_in_flight_finish(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    tenant = await create_tenant(owner_pool, "shutdown-finish")
    with running_provider(latency_s=1.0) as provider:
        service = ServiceProcess(
            database_urls, provider.url, tmp_path / "serve.log", WORKER_SHUTDOWN_GRACE_S="20"
        )
        await service.start()
        try:
            run_id = await _start_run(service, tenant.api_key)
            await _wait_mid_call(owner_pool, run_id)
            await _stopped_within(service, 45)
        finally:
            service.kill()
        status = await owner_pool.fetchval(
            "SELECT status FROM investigations WHERE id = $1", UUID(run_id)
        )
        assert status == "succeeded"
        await assert_promise_kept(owner_pool, app_pool, [tenant.tenant_id], [run_id], provider)


async def test_sigterm_hands_back_a_run_that_outlasts_the_grace(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    tenant = await create_tenant(owner_pool, "shutdown-hand-back")
    lease = {"WORKER_LEASE_S": "20", "WORKER_SHUTDOWN_GRACE_S": "1", "LLM_REQUEST_TIMEOUT_S": "30"}
    with running_provider(latency_s=20.0) as stalled:
        first = ServiceProcess(database_urls, stalled.url, tmp_path / "first.log", **lease)
        await first.start()
        try:
            run_id = await _start_run(first, tenant.api_key)
            await _wait_mid_call(owner_pool, run_id)
            await _stopped_within(first, 30)
        finally:
            first.kill()
    # The 1 s grace, not the 20 s call: the run is handed back and its call was cut off (below).
    run = await owner_pool.fetchrow(
        "SELECT status, lease_expires_at <= now() AS handed_back FROM investigations WHERE id = $1",
        UUID(run_id),
    )
    assert run["status"] == "running" and run["handed_back"], dict(run)
    # The cut-off call was settled before the process exited: counted, flagged as an estimate.
    call = await owner_pool.fetchrow(
        "SELECT status, cost_is_estimate FROM llm_api_calls WHERE investigation_id = $1",
        UUID(run_id),
    )
    assert call["status"] == "cancelled" and call["cost_is_estimate"], dict(call)

    with running_provider(latency_s=0.1) as provider:
        second = ServiceProcess(database_urls, provider.url, tmp_path / "second.log", **lease)
        await second.start()
        try:
            # Well within the 20 s lease: the run was handed back, not abandoned.
            await wait_until_all_runs_end(owner_pool, [run_id], timeout=10)
        finally:
            second.stop()
        run = await owner_pool.fetchrow(
            "SELECT status, reason FROM investigations WHERE id = $1", UUID(run_id)
        )
        assert run["status"] == "failed" and "interrupted" in run["reason"], dict(run)
        await assert_promise_kept(owner_pool, app_pool, [tenant.tenant_id], [run_id], stalled)
