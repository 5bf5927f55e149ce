"""Whole investigations against a hostile provider: hypothesis draws the lies, money holds.

Each example queues a run with a drawn ceiling and answers its model calls with a drawn sequence
from the hostile catalogue (usage lies, broken bodies, tool-call floods, nested and nameless
calls, errors), then checks after the run: it ended; its spend is within its ceiling and equals
the sum of its ledger rows; no row is pending or above its reservation; the tenant's month is
within its cap (set low, so the cap is reached along the way) and reconciles exactly.

Bounded: 30 derandomised examples of at most 6 steps each, about 30 s here.
"""

from __future__ import annotations

import os
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest
import respx
from claimed_runs import claim_of, queue_claimed_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_service.db.pool import tenant_transaction
from llm_service.investigations.runner import InvestigationRunner
from llm_service.llm.pricing import gateway_from_settings
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant

sys.path.insert(0, str(Path(__file__).parents[1] / "llm"))
from hostile_provider import CATALOGUE, OPENAI_URL, scripted

TERMINAL = {"succeeded", "budget_exhausted", "timed_out", "failed", "cancelled"}
CAP_CENTS = Decimal("0.8")


@pytest.fixture(scope="module")
def hostile_settings(test_settings: Settings) -> Settings:
    os.environ.setdefault("OPENAI_API_KEY", "sk-test")
    return test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "llm_max_attempts": 2}
    )


@pytest.fixture(scope="module")
async def capped_tenant(owner_pool: asyncpg.Pool) -> CreatedTenant:
    """One tenant for every example, with a low monthly cap that the examples reach."""
    return await create_tenant(
        owner_pool, f"hostile-{uuid.uuid4().hex[:8]}", monthly_cap_cents=CAP_CENTS
    )


async def _queue_claimed_run(
    pool: asyncpg.Pool, tenant_id: UUID, max_cost_cents: Decimal, max_steps: int
) -> UUID:
    return await queue_claimed_run(
        pool,
        tenant_id,
        "Why did paid social revenue fall last week?",
        max_cost_cents=max_cost_cents,
        timeout_ms=30_000,
        max_steps=max_steps,
        worker="hostile-worker",
    )


async def _assert_invariants(pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> None:
    async with tenant_transaction(pool, tenant_id) as conn:
        run = await conn.fetchrow(
            "SELECT status, cost_cents, max_cost_cents FROM investigations WHERE id = $1", run_id
        )
        ledger = await conn.fetchrow(
            "SELECT coalesce(sum(cost_cents), 0) AS spent, "
            "count(*) FILTER (WHERE status = 'pending') AS pending, "
            "count(*) FILTER (WHERE cost_cents > reserved_cents) AS over "
            "FROM llm_api_calls WHERE investigation_id = $1",
            run_id,
        )
        month = await conn.fetchval(
            "SELECT coalesce(sum(total_cost_cents), 0) FROM llm_monthly_costs"
        )
        drift = await conn.fetch(
            "SELECT * FROM fn_reconcile_monthly_costs() WHERE tenant_id = $1 AND "
            "(recorded_cost_cents <> computed_cost_cents OR NOT breakdowns_match)",
            tenant_id,
        )
    assert run["status"] in TERMINAL
    assert run["cost_cents"] <= run["max_cost_cents"]
    assert run["cost_cents"] == ledger["spent"]
    assert ledger["pending"] == 0 and ledger["over"] == 0
    assert month <= CAP_CENTS
    assert drift == []


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    lies=st.lists(st.sampled_from(sorted(CATALOGUE)), min_size=1, max_size=6),
    max_cost_cents=st.sampled_from([Decimal("0.05"), Decimal("0.4"), Decimal(2), Decimal(30)]),
    max_steps=st.integers(1, 5),
)
async def test_no_sequence_of_lies_breaks_the_money_invariants(
    hostile_settings: Settings,
    app_pool: asyncpg.Pool,
    capped_tenant: CreatedTenant,
    lies: list[str],
    max_cost_cents: Decimal,
    max_steps: int,
) -> None:
    run_id = await _queue_claimed_run(app_pool, capped_tenant.tenant_id, max_cost_cents, max_steps)
    runner = InvestigationRunner(
        app_pool, gateway_from_settings(hostile_settings, app_pool), "hostile-worker"
    )
    with respx.mock:
        respx.post(OPENAI_URL).mock(side_effect=scripted(lies))
        await runner.run(claim_of(run_id))
    await _assert_invariants(app_pool, capped_tenant.tenant_id, run_id)


async def test_the_examples_drove_the_tenant_to_its_cap(
    app_pool: asyncpg.Pool, capped_tenant: CreatedTenant
) -> None:
    """Runs after the property test (same module, same tenant): the cap path was exercised."""
    async with tenant_transaction(app_pool, capped_tenant.tenant_id) as conn:
        month = await conn.fetchval(
            "SELECT coalesce(sum(total_cost_cents), 0) FROM llm_monthly_costs"
        )
        anomalies = await conn.fetchval(
            "SELECT count(*) FROM llm_api_calls WHERE usage_anomaly IS NOT NULL"
        )
    assert CAP_CENTS / 2 <= month <= CAP_CENTS
    assert anomalies > 0
