"""A random multi-tenant workload in a chosen month, settled through the real ledger."""

from __future__ import annotations

import asyncio
import calendar
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any
from uuid import UUID

import asyncpg

from budgets.money import usd_to_cents
from llm_service.db.pool import tenant_transaction
from llm_service.tenants.service import create_tenant, set_monthly_cap
from tests.helpers.cost_workload import ENDPOINTS, MODELS, reserve, settle

#: One input token of gpt-4o-mini: the smallest real cost, which must never show as $0.00.
ONE_TOKEN_USD = Decimal("0.00000015")


@dataclass(frozen=True)
class Call:
    """One settled call as the test wrote it."""

    day: date
    model: str
    endpoint: str
    cost_cents: Decimal
    input_tokens: int
    output_tokens: int
    estimate: bool


@dataclass
class TenantWorkload:
    """A tenant created for the test, its cap and every call it made."""

    tenant_id: UUID
    name: str
    cap_cents: Decimal
    calls: list[Call] = field(default_factory=list)

    @property
    def total_cents(self) -> Decimal:
        """The exact sum of its calls."""
        return sum((c.cost_cents for c in self.calls), Decimal(0))

    @property
    def estimated_cents(self) -> Decimal:
        """The exact sum of its estimated calls."""
        return sum((c.cost_cents for c in self.calls if c.estimate), Decimal(0))

    def by(self, attribute: str) -> dict[str, dict[str, Any]]:
        """Calls, tokens and cost per model or endpoint."""
        out: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost": Decimal(0)}
        )
        for c in self.calls:
            entry = out[getattr(c, attribute)]
            entry["calls"] += 1
            entry["input_tokens"] += c.input_tokens
            entry["output_tokens"] += c.output_tokens
            entry["cost"] += c.cost_cents
        return dict(out)

    def daily(self) -> dict[tuple[date, str], tuple[Decimal, int]]:
        """(day, model) -> (cost cents, calls)."""
        out: dict[tuple[date, str], tuple[Decimal, int]] = {}
        for c in self.calls:
            cost, n = out.get((c.day, c.model), (Decimal(0), 0))
            out[(c.day, c.model)] = (cost + c.cost_cents, n + 1)
        return out


async def settle_in_month(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant_id: UUID,
    *,
    day: date,
    model: str,
    endpoint: str,
    cost_usd: Decimal,
    status: str = "succeeded",
    input_tokens: int = 0,
    output_tokens: int = 0,
    estimate: bool = False,
) -> Call:
    """Reserve as the service does, move the still-pending call to `day`, then settle it."""
    reservation = await reserve(app_pool, tenant_id, model, endpoint, cost_usd)
    started = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        # A pending call's start may still move; the roll-up files it under this month.
        moved = await conn.execute(
            "UPDATE llm_api_calls SET started_at = $2, created_at = $2 "
            "WHERE id = $1 AND status = 'pending'",
            reservation.call_id,
            started,
        )
        assert moved == "UPDATE 1"
    breakdown = None
    if status == "succeeded" and not estimate and input_tokens > 1:
        # Billed as a provider with prompt caching would: half the cost on cached reads, which
        # would have cost ten times as much uncached.
        half = usd_to_cents(cost_usd) / 2
        uncached, cached = input_tokens - input_tokens // 2, input_tokens // 2
        breakdown = {
            "input": {"tokens": uncached, "cost_cents": half, "uncached_cents": half,
                      "rate_usd": str(half / 100 / uncached), "rate_known": True},
            "cache_read": {"tokens": cached, "cost_cents": half, "uncached_cents": half * 10,
                           "rate_usd": str(half / 100 / cached), "rate_known": True},
            "output": {"tokens": output_tokens, "cost_cents": 0, "uncached_cents": 0,
                       "rate_usd": "0", "rate_known": True},
        }  # fmt: skip
    await settle(
        app_pool,
        tenant_id,
        reservation,
        cost_usd,
        status=status,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        estimate=estimate,
        usage_breakdown=breakdown,
    )
    return Call(day, model, endpoint, usd_to_cents(cost_usd), input_tokens, output_tokens, estimate)


async def _tenant_calls(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    workload: TenantWorkload,
    month: date,
    rng: random.Random,
    max_cost_usd: Decimal,
) -> None:
    days = calendar.monthrange(month.year, month.month)[1]
    jobs: list[dict[str, Any]] = [
        {
            "model": MODELS[0],
            "endpoint": "explanations",
            "cost_usd": ONE_TOKEN_USD,
            "input_tokens": 1,
        }
    ]
    scale = int(max_cost_usd * 10**12)
    for _ in range(rng.randint(8, 16)):
        status = rng.choice(("succeeded", "succeeded", "succeeded", "failed", "timed_out"))
        ok = status == "succeeded"
        jobs.append(
            {
                "model": rng.choice(MODELS),
                "endpoint": rng.choice(ENDPOINTS),
                "cost_usd": Decimal(rng.randint(1, scale)).scaleb(-12) if ok else Decimal(0),
                "status": status,
                "input_tokens": rng.randint(0, 5000),
                "output_tokens": rng.randint(0, 800) if ok else 0,
                "estimate": ok and rng.random() < 0.25,
            }
        )
    # One tenant's calls run one after another (each reservation must fit under the cap).
    for job in jobs:
        day = month + timedelta(days=rng.randrange(days))
        workload.calls.append(
            await settle_in_month(app_pool, owner_pool, workload.tenant_id, day=day, **job)
        )


async def random_workload(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    month: date,
    rng: random.Random,
    *,
    tenants: int = 4,
    prefix: str = "finance",
) -> list[TenantWorkload]:
    """Several tenants with random calls spread over `month`, then caps they stay under."""
    workloads = []
    for i in range(tenants):
        name = f"{prefix}-{i}-{uuid.uuid4().hex[:6]}"
        created = await create_tenant(owner_pool, name)
        workloads.append(TenantWorkload(created.tenant_id, name, Decimal(2000)))
    limits = [Decimal("0.00002"), Decimal("0.0002"), Decimal("0.002"), Decimal("0.02")]
    await asyncio.gather(
        *(
            _tenant_calls(app_pool, owner_pool, w, month, rng, limits[i % len(limits)])
            for i, w in enumerate(workloads)
        )
    )
    # Caps in whole cents, from just above the spend to far above it.
    for w in workloads:
        factor = Decimal(rng.choice(("1.05", "1.5", "3", "20")))
        w.cap_cents = max(Decimal(1), (w.total_cents * factor).to_integral_value(ROUND_CEILING))
        await set_monthly_cap(owner_pool, w.tenant_id, w.cap_cents)
    return workloads
