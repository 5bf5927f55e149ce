"""Reconciliation: zero differences for honest ledgers, and every tampering found (API and CLI)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest

from llm_service.cli import main
from llm_service.costs.ledger_repository import reserve_call
from llm_service.costs.reconcile import ReconcileReport, ReconcileRow, reconcile, render
from llm_service.db import runtime
from llm_service.db.pool import tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.settings import get_settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from tests.helpers.cost_workload import MODELS, MONTH, random_workload, run_call
from tests.helpers.waiting import wait_for_lease_end

RunCli = Callable[..., Awaitable[int]]
TAMPER_TOTAL = "UPDATE llm_monthly_costs SET total_cost_cents = total_cost_cents {} 0.0000000001 "
TAMPER_TOTAL += "WHERE tenant_id = $1"
TAMPER_BREAKDOWN = """
UPDATE llm_monthly_costs
   SET model_breakdown = jsonb_set(model_breakdown, ARRAY[$2::text, 'output_tokens'],
       to_jsonb((model_breakdown -> $2 ->> 'output_tokens')::bigint {} 1))
 WHERE tenant_id = $1
"""


async def _reconcile(app_pool: asyncpg.Pool, month: date | None = MONTH) -> ReconcileReport:
    async with app_pool.acquire() as conn, conn.transaction():
        return await reconcile(conn, month)


def _rows_of(report: ReconcileReport, *tenant_ids: UUID) -> dict[UUID, ReconcileRow]:
    return {row.tenant_id: row for row in report.rows if row.tenant_id in tenant_ids}


async def _as_owner(owner_pool: asyncpg.Pool, tenant_id: UUID, sql: str, *args: object) -> None:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        assert await conn.execute(sql, tenant_id, *args) == "UPDATE 1"


@pytest.fixture
async def run_cli(
    monkeypatch: pytest.MonkeyPatch, database_urls: DatabaseUrls
) -> AsyncIterator[RunCli]:
    """`llm-service costs reconcile ...` against the session's database, in a worker thread."""
    monkeypatch.setenv("DATABASE_URL", database_urls.owner)
    monkeypatch.setenv("APP_DATABASE_URL", database_urls.app)
    monkeypatch.setattr(runtime, "_runtime", None)
    get_settings.cache_clear()

    async def run(*args: str) -> int:
        return await asyncio.to_thread(main, ["costs", "reconcile", *args])

    yield run
    get_settings.cache_clear()


async def _tenants(owner_pool: asyncpg.Pool, n: int) -> list[UUID]:
    created = [
        await create_tenant(owner_pool, f"reconcile-{i}-{uuid.uuid4().hex[:8]}") for i in range(n)
    ]
    return [c.tenant_id for c in created]


async def test_zero_difference_after_random_workload_across_tenants(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool
) -> None:
    seed = random.randrange(2**32)
    print(f"workload seed {seed}")
    tenants = await _tenants(owner_pool, 4)
    workloads = await asyncio.gather(
        *(random_workload(app_pool, t, random.Random(seed + i)) for i, t in enumerate(tenants))
    )
    report = await _reconcile(app_pool)
    rows = _rows_of(report, *tenants)
    assert set(rows) == set(tenants)
    for tenant_id, calls in zip(tenants, workloads, strict=True):
        row = rows[tenant_id]
        expected = sum((c.cost_cents for c in calls), Decimal(0))
        assert row.month == MONTH
        assert row.recorded_cost_cents == row.computed_cost_cents == expected
        assert row.recorded_calls == row.computed_calls == len(calls)
        assert row.breakdowns_match
        assert row.matches and row.difference_cents == 0
    assert all(row.month == MONTH for row in report.rows)


async def test_reconcile_counts_expired_reservations(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    await run_call(app_pool, tid, MODELS[0], "explanations", Decimal("0.0000001234"))
    async with tenant_transaction(app_pool, tid) as conn:
        crashed = await reserve_call(
            conn,
            tenant_id=tid,
            endpoint="investigations",
            model=MODELS[1],
            provider="openai",
            worst_case_usd=Decimal("0.002"),
            lease_seconds=0.01,
        )

    await wait_for_lease_end(app_pool, tid, crashed.call_id)
    report = await _reconcile(app_pool)
    assert report.swept >= 1
    row = _rows_of(report, tid)[tid]
    assert row.recorded_calls == row.computed_calls == 2
    assert row.recorded_cost_cents == row.computed_cost_cents == Decimal("0.20001234")
    assert row.matches


async def test_tampered_total_is_a_difference_and_cli_exits_1(
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    run_cli: RunCli,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tid = tenant.tenant_id
    await random_workload(app_pool, tid, random.Random(3))
    await _as_owner(owner_pool, tid, TAMPER_TOTAL.format("+"))
    try:
        row = _rows_of(await _reconcile(app_pool), tid)[tid]
        assert row.difference_cents == Decimal("0.0000000001")
        assert row.recorded_calls == row.computed_calls
        assert row.breakdowns_match  # only the total was touched
        assert not row.matches

        capsys.readouterr()
        assert await run_cli() == 1
        out = capsys.readouterr().out
        (line,) = [ln for ln in out.splitlines() if str(tid) in ln]
        assert "+0.0000000001" in line and line.endswith("DIFFERENCE")
        assert "0 differences" not in out

        assert await run_cli("--month", f"{MONTH:%Y-%m}") == 1
    finally:
        await _as_owner(owner_pool, tid, TAMPER_TOTAL.format("-"))
    assert _rows_of(await _reconcile(app_pool), tid)[tid].matches


async def test_tampered_breakdown_alone_is_a_difference(
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    run_cli: RunCli,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tid = tenant.tenant_id
    call = await run_call(
        app_pool, tid, MODELS[2], "budget_optimizations", Decimal("0.01"), output_tokens=40
    )
    await _as_owner(owner_pool, tid, TAMPER_BREAKDOWN.format("+"), call.model)
    try:
        row = _rows_of(await _reconcile(app_pool), tid)[tid]
        assert row.difference_cents == 0
        assert row.recorded_calls == row.computed_calls == 1
        assert not row.breakdowns_match
        assert not row.matches

        capsys.readouterr()
        assert await run_cli() == 1
        (line,) = [ln for ln in capsys.readouterr().out.splitlines() if str(tid) in ln]
        assert " NO " in line and line.endswith("DIFFERENCE")
    finally:
        await _as_owner(owner_pool, tid, TAMPER_BREAKDOWN.format("-"), call.model)
    assert _rows_of(await _reconcile(app_pool), tid)[tid].matches


async def test_cli_shows_no_difference_for_honest_tenants(
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    run_cli: RunCli,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tenants = await _tenants(owner_pool, 2)
    for i, tenant_id in enumerate(tenants):
        await random_workload(app_pool, tenant_id, random.Random(100 + i))
    capsys.readouterr()
    # The exit code covers every tenant of the shared test database, so assert on ours only.
    await run_cli("--month", f"{MONTH:%Y-%m}")
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["tenant", "month", "recorded_cents"]
    assert out.rstrip().splitlines()[-1].endswith(("difference", "differences"))
    for tenant_id in tenants:
        (line,) = [ln for ln in out.splitlines() if str(tenant_id) in ln]
        cells = line.split()
        assert cells[1] == f"{MONTH:%Y-%m}"
        assert cells[2] == cells[3] and cells[4] == "0.0000000000"
        assert cells[5] == cells[6] and cells[7] == "yes"
        assert "DIFFERENCE" not in line


async def test_cli_refuses_malformed_month(run_cli: RunCli) -> None:
    with pytest.raises(SystemExit) as exited:
        await run_cli("--month", "2025-13")
    assert exited.value.code == 2


def test_render_ends_with_the_number_of_differences() -> None:
    tenant_id = UUID(int=1)
    good = ReconcileRow(tenant_id, date(2025, 1, 1), Decimal("1.5"), Decimal("1.5"), 2, 2, True)
    bad = ReconcileRow(tenant_id, date(2025, 2, 1), Decimal("1"), Decimal("1.25"), 3, 2, True)
    clean = render(ReconcileReport(month=None, swept=0, rows=[good]))
    assert clean.splitlines()[-1] == "0 differences"
    assert "1.5000000000" in clean
    dirty = render(ReconcileReport(month=date(2025, 2, 1), swept=1, rows=[good, bad]))
    assert dirty.splitlines()[-1] == "1 difference"
    (line,) = [ln for ln in dirty.splitlines() if "2025-02" in ln and "DIFFERENCE" in ln]
    assert "-0.2500000000" in line
    assert render(ReconcileReport(month=None, swept=0, rows=[])).endswith("0 differences")
