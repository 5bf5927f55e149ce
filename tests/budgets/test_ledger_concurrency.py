"""The monthly cap holds across OS processes, and a crashed process's reservation is swept."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest

from llm_service.costs.ledger_repository import (
    CallReservation,
    MonthlyCapExceeded,
    cap_status,
    reserve_call,
    settle_call,
)
from llm_service.db.pool import tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.tenants.service import CreatedTenant
from tests.helpers.waiting import wait_for_lease_end

WORKER = Path(__file__).with_name("ledger_worker.py")
CAP_CENTS = Decimal("1.0")
WORST_USD = Decimal("0.003")  # 0.3 cents: at most three fit under a 1-cent cap at once
TASKS_PER_PROCESS = 30


async def _set_cap(owner_pool: asyncpg.Pool, tenant_id: UUID, cents: Decimal) -> None:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        await conn.execute(
            "UPDATE tenants SET monthly_cap_cents = $2 WHERE id = $1", tenant_id, cents
        )


async def _reserve(app_pool: asyncpg.Pool, tenant_id: UUID, usd: str) -> CallReservation:
    async with tenant_transaction(app_pool, tenant_id) as conn:
        return await reserve_call(
            conn,
            tenant_id=tenant_id,
            endpoint="investigations",
            model="openai/gpt-4o-mini",
            provider="openai",
            worst_case_usd=Decimal(usd),
            lease_seconds=60,
        )


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_cap_holds_across_two_processes(
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    database_urls: DatabaseUrls,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    await _set_cap(owner_pool, tid, CAP_CENTS)
    start_at = f"{time.time() + 2.0:.3f}"  # both processes start their burst together
    procs = [
        _spawn(
            "load", database_urls.app, str(tid), str(TASKS_PER_PROCESS), str(WORST_USD), start_at
        )
        for _ in range(2)
    ]
    outputs = await asyncio.gather(*(asyncio.to_thread(p.communicate, timeout=30) for p in procs))
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    reserved = sum(r["reserved"] for r in results)
    refused = sum(r["refused"] for r in results)
    settled_by_workers = sum(Decimal(r["settled_cents"]) for r in results)
    assert reserved + refused == 2 * TASKS_PER_PROCESS
    assert reserved >= 1
    assert refused >= TASKS_PER_PROCESS  # most of the simultaneous burst cannot fit
    assert all(r["reserved"] + r["refused"] == TASKS_PER_PROCESS for r in results)

    async with tenant_transaction(app_pool, tid) as conn:
        calls = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(cost_cents), 0) AS cost, "
            "count(*) FILTER (WHERE status = 'pending') AS pending FROM llm_api_calls"
        )
        monthly = await conn.fetchval("SELECT sum(total_cost_cents) FROM llm_monthly_costs")
    assert calls["n"] == reserved
    assert calls["pending"] == 0
    assert calls["cost"] == monthly == settled_by_workers
    assert monthly <= CAP_CENTS


async def test_crashed_process_reservation_counts_until_swept(
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    database_urls: DatabaseUrls,
    tenant: CreatedTenant,
) -> None:
    tid = tenant.tenant_id
    await _set_cap(owner_pool, tid, CAP_CENTS)
    proc = _spawn("crash", database_urls.app, str(tid), "0.006", "3")  # 0.6 cents for 3 s
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=20)
        assert line, proc.stderr.read() if proc.stderr else "worker printed nothing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
    assert proc.returncode == -signal.SIGKILL
    crashed = json.loads(line)
    call_id, expires_at = UUID(crashed["call_id"]), datetime.fromisoformat(crashed["expires_at"])

    # While its lease is live, the dead process's reservation still holds its worst case.
    async with tenant_transaction(app_pool, tid) as conn:
        status = await cap_status(conn, tid)
    assert status.reserved_cents == Decimal("0.6")
    assert status.spent_cents == 0
    with pytest.raises(MonthlyCapExceeded):
        await _reserve(app_pool, tid, "0.005")  # 0.6 + 0.5 > 1.0
    async with tenant_transaction(app_pool, tid) as conn:
        assert await conn.fetchval("SELECT now() < $1", expires_at), "lease ended before checks"

    # After the lease, the next reservation sweeps it: abandoned, charged at its worst case.
    await wait_for_lease_end(app_pool, tid, call_id)
    fits = await _reserve(app_pool, tid, "0.004")  # 0.6 + 0.4 <= 1.0
    async with tenant_transaction(app_pool, tid) as conn:
        row = await conn.fetchrow(
            "SELECT status, cost_cents, reserved_cents, cost_is_estimate, error_type "
            "FROM llm_api_calls WHERE id = $1",
            call_id,
        )
        monthly = await conn.fetchrow(
            "SELECT total_cost_cents, estimated_cost_cents, total_calls FROM llm_monthly_costs"
        )
        status = await cap_status(conn, tid)
        await settle_call(conn, fits, status="failed", cost_usd=Decimal(0))
    assert row["status"] == "abandoned"
    assert row["cost_cents"] == row["reserved_cents"] == Decimal("0.6")
    assert row["cost_is_estimate"] is True
    assert row["error_type"] == "lease_expired"
    assert monthly["total_cost_cents"] == monthly["estimated_cost_cents"] == Decimal("0.6")
    assert monthly["total_calls"] == 1
    # It no longer counts as a reservation (only the new one does); its money counts as spent.
    assert status.reserved_cents == Decimal("0.4")
    assert status.spent_cents == Decimal("0.6")
    with pytest.raises(MonthlyCapExceeded):
        await _reserve(app_pool, tid, "0.005")  # the abandoned worst case stays counted
