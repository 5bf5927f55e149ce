"""A month of settled LLM calls written through the real ledger, for the cost tests."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from budgets.estimate import actual_cost
from budgets.money import usd_to_cents
from budgets.prices import ModelPrice
from llm_service.costs.ledger_repository import CallReservation, reserve_call, settle_call
from llm_service.db.pool import tenant_transaction

MONTH = datetime.now(UTC).date().replace(day=1)
MODELS = ("openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-haiku-4-5")
ENDPOINTS = ("explanations", "investigations", "budget_optimizations", "embeddings")
GPT_4O_MINI = ModelPrice(
    model="gpt-4o-mini",
    input_per_token=Decimal("0.00000015"),
    output_per_token=Decimal("0.0000006"),
    provider="openai",
    max_output_tokens=16384,
    tokenizer_exact=True,
)


@dataclass(frozen=True)
class Call:
    """One settled call of a workload, as the test wrote it."""

    model: str
    endpoint: str
    cost_cents: Decimal
    input_tokens: int
    output_tokens: int
    estimate: bool


async def reserve(
    pool: asyncpg.Pool, tenant_id: UUID, model: str, endpoint: str, cost_usd: Decimal
) -> CallReservation:
    """Reserve a call that will cost `cost_usd` (a little more at worst), as the service does."""
    async with tenant_transaction(pool, tenant_id) as conn:
        return await reserve_call(
            conn,
            tenant_id=tenant_id,
            endpoint=endpoint,
            model=model,
            provider=model.split("/")[0],
            worst_case_usd=cost_usd + Decimal("0.001"),
            lease_seconds=60,
        )


async def settle(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    reservation: CallReservation,
    cost_usd: Decimal,
    *,
    status: str = "succeeded",
    input_tokens: int = 0,
    output_tokens: int = 0,
    estimate: bool = False,
    usage_breakdown: dict[str, Any] | None = None,
) -> None:
    """Settle a reservation with what the call cost (asserting it was still pending)."""
    async with tenant_transaction(pool, tenant_id) as conn:
        assert await settle_call(
            conn,
            reservation,
            status=status,
            cost_usd=cost_usd,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_is_estimate=estimate,
            usage_breakdown=usage_breakdown,
        )


async def run_call(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    model: str,
    endpoint: str,
    cost_usd: Decimal,
    *,
    status: str = "succeeded",
    input_tokens: int = 0,
    output_tokens: int = 0,
    estimate: bool = False,
) -> Call:
    """Reserve and settle one call through the ledger, as the service does."""
    reservation = await reserve(pool, tenant_id, model, endpoint, cost_usd)
    await settle(
        pool,
        tenant_id,
        reservation,
        cost_usd,
        status=status,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        estimate=estimate,
    )
    return Call(model, endpoint, usd_to_cents(cost_usd), input_tokens, output_tokens, estimate)


async def random_workload(pool: asyncpg.Pool, tenant_id: UUID, rng: random.Random) -> list[Call]:
    """A one-token gpt-4o-mini call plus random calls: several models and endpoints, some failed
    (cost 0), some estimated, costs with 10 decimal places of cents."""
    one_token = actual_cost(GPT_4O_MINI, 1, 0)
    jobs = [run_call(pool, tenant_id, MODELS[0], "explanations", one_token, input_tokens=1)]
    for _ in range(rng.randint(15, 30)):
        status = rng.choice(("succeeded", "succeeded", "succeeded", "failed", "timed_out"))
        cost = Decimal(rng.randint(1, 10**9)).scaleb(-12) if status == "succeeded" else Decimal(0)
        jobs.append(
            run_call(
                pool,
                tenant_id,
                rng.choice(MODELS),
                rng.choice(ENDPOINTS),
                cost,
                status=status,
                input_tokens=rng.randint(0, 5000),
                output_tokens=rng.randint(0, 800) if status == "succeeded" else 0,
                estimate=status == "succeeded" and rng.random() < 0.25,
            )
        )
    return list(await asyncio.gather(*jobs))
