"""A settled call's per-kind breakdown must add up to the call, whoever writes it (app role)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from llm_service.costs.ledger_repository import reserve_call, settle_call
from llm_service.db.pool import tenant_transaction
from llm_service.tenants.service import CreatedTenant

COST = Decimal("0.0000123")  # USD: 1.23e-3 cents


def kinds(**overrides: Any) -> dict[str, Any]:
    """100 input tokens (60 cached) and 10 output tokens costing COST in all."""
    breakdown: dict[str, Any] = {
        "input": {
            "tokens": 40,
            "rate_usd": "0.0000002",
            "cost_cents": "0.0008",
            "uncached_cents": "0.0008",
            "rate_known": True,
        },
        "cache_read": {
            "tokens": 60,
            "rate_usd": "0.00000005",
            "cost_cents": "0.0003",
            "uncached_cents": "0.0006",
            "rate_known": True,
        },
        "output": {
            "tokens": 10,
            "rate_usd": "0.00000013",
            "cost_cents": "0.00013",
            "uncached_cents": "0.00013",
            "rate_known": True,
        },
    }
    breakdown.update(overrides)
    return breakdown


async def settle(pool: asyncpg.Pool, tenant: CreatedTenant, breakdown: Any) -> bool:
    async with tenant_transaction(pool, tenant.tenant_id) as conn:
        call = await reserve_call(
            conn,
            tenant_id=tenant.tenant_id,
            endpoint="investigations",
            model="openai/gpt-4o-mini",
            provider="openai",
            worst_case_usd=Decimal("0.001"),
            lease_seconds=60,
        )
    async with tenant_transaction(pool, tenant.tenant_id) as conn:
        return await settle_call(
            conn,
            call,
            status="succeeded",
            cost_usd=COST,
            input_tokens=100,
            output_tokens=10,
            usage_breakdown=breakdown,
        )


async def test_a_breakdown_that_adds_up_is_rolled_up(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    assert await settle(app_pool, tenant, kinds())
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        month = await conn.fetchval("SELECT kind_breakdown FROM llm_monthly_costs")
    assert month["cache_read"] == {"tokens": 60, "cost_cents": Decimal("0.0003"),
                                   "uncached_cents": Decimal("0.0006")}  # fmt: skip


@pytest.mark.parametrize(
    "breakdown",
    [
        pytest.param(kinds(cache_read={"tokens": 60, "cost_cents": "0.03",
                                       "uncached_cents": "0.0006"}), id="costs-more"),
        pytest.param(kinds(cache_read={"tokens": 60, "cost_cents": "0",
                                       "uncached_cents": "0.0006"}), id="costs-less"),
        pytest.param(kinds(cache_read={"tokens": 600, "cost_cents": "0.0003",
                                       "uncached_cents": "0.0006"}), id="more-tokens"),
        pytest.param(kinds(cache_read={"tokens": -60, "cost_cents": "0.0003",
                                       "uncached_cents": "0.0006"}), id="negative"),
        pytest.param(kinds(free={"tokens": 0, "cost_cents": "0", "uncached_cents": "0"}),
                     id="unknown-kind"),
        pytest.param(kinds(output={"tokens": "ten", "cost_cents": "0.00013",
                                   "uncached_cents": "0.00013"}), id="not-a-number"),
        pytest.param([1, 2], id="not-an-object"),
    ],
)  # fmt: skip
async def test_a_breakdown_that_does_not_add_up_is_refused(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, breakdown: Any
) -> None:
    with pytest.raises(asyncpg.PostgresError):
        await settle(app_pool, tenant, breakdown)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        assert await conn.fetchval("SELECT count(*) FROM llm_monthly_costs") == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM llm_api_calls WHERE status = 'pending'") == 1
        )
