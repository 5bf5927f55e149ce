"""Finance reports across tenants: each tenant's month against its cap, and spend per day."""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import asyncpg
from pydantic import BaseModel, Field

from budgets.money import exact_arithmetic
from llm_service.costs.service import (
    EndpointCost,
    KindCost,
    ModelCost,
    build_report,
    cents_text,
    exact_cents_text,
    month_label,
    signed_usd_text,
    usd_text,
)
from llm_service.finance import repository

ZERO: Final = Decimal(0)
_TENANT_FIELDS: Final = frozenset(
    {
        "tenant_id",
        "total_cost_usd",
        "total_cost_cents",
        "estimated_cost_usd",
        "estimated_cost_cents",
        "calls",
        "input_tokens",
        "output_tokens",
        "by_model",
        "by_endpoint",
        "by_kind",
        "cached_cost_usd",
        "cached_cost_cents",
        "uncached_cost_usd",
        "uncached_cost_cents",
        "caching_saved_usd",
        "caching_saved_cents",
        "unitemised_cost_usd",
        "unitemised_cost_cents",
        "cap_usd",
        "cap_cents",
        "cap_used_fraction",
    }
)


class TenantMonthCosts(BaseModel):
    """One tenant's month: exact totals, breakdowns by model and endpoint, and its cap."""

    tenant_id: UUID
    tenant_name: str
    total_cost_usd: str = Field(description="exact decimal USD")
    total_cost_cents: str = Field(description="exact decimal cents at the ledger's 10 places")
    estimated_cost_usd: str = Field(description="the part of the total that is estimated")
    estimated_cost_cents: str
    calls: int
    input_tokens: int
    output_tokens: int
    by_model: list[ModelCost]
    by_endpoint: list[EndpointCost]
    by_kind: list[KindCost]
    cached_cost_usd: str = Field(description="spent on cache reads and cache writes")
    cached_cost_cents: str
    uncached_cost_usd: str = Field(description="spent on every other kind of token")
    uncached_cost_cents: str
    caching_saved_usd: str = Field(description="what cached tokens would have cost more uncached")
    caching_saved_cents: str
    unitemised_cost_usd: str = Field(description="not billed from usage (estimates, anomalies)")
    unitemised_cost_cents: str
    cap_usd: str
    cap_cents: str
    cap_used_fraction: str | None = Field(
        description="total / cap (exact, or rounded to 20 places); null when the cap is 0"
    )


class FinanceMonthlyCosts(BaseModel):
    """Every tenant's LLM spend in a UTC month, most spent first, with the month's totals."""

    month: str = Field(description="YYYY-MM (UTC)")
    currency: str = "USD"
    tenant_count: int
    total_cost_usd: str
    total_cost_cents: str
    estimated_cost_usd: str
    estimated_cost_cents: str
    calls: int
    input_tokens: int
    output_tokens: int
    cached_cost_usd: str = Field(description="all tenants: spent on cache reads and writes")
    cached_cost_cents: str
    uncached_cost_usd: str
    uncached_cost_cents: str
    caching_saved_usd: str = Field(description="all tenants: what caching saved")
    caching_saved_cents: str
    tenants: list[TenantMonthCosts]


class ModelDayCost(BaseModel):
    """One model's settled spend on one day, all tenants together."""

    model: str
    calls: int
    cost_usd: str
    cost_cents: str


class DayCosts(BaseModel):
    """One UTC day's settled spend, all tenants together, by model (most spent first)."""

    day: date
    calls: int
    cost_usd: str
    cost_cents: str
    by_model: list[ModelDayCost]


class TenantDayModelCost(BaseModel):
    """One tenant's settled spend on one model on one day."""

    day: date
    tenant_id: UUID
    model: str
    calls: int
    cost_usd: str
    cost_cents: str


class FinanceDailyCosts(BaseModel):
    """Settled spend per UTC day of a month: every day (zeros included) stacked by model."""

    month: str = Field(description="YYYY-MM (UTC)")
    currency: str = "USD"
    models: list[str] = Field(description="every model spent on in the month, most spent first")
    total_cost_usd: str
    total_cost_cents: str
    days: list[DayCosts]
    rows: list[TenantDayModelCost] = Field(description="the same spend per tenant")


def _sum(values: Iterable[Decimal]) -> Decimal:
    with exact_arithmetic():
        return sum(values, ZERO)


def tenant_month(month: date, row: Mapping[str, Any]) -> TenantMonthCosts:
    """Shape one row of fn_finance_monthly_costs exactly as a tenant's own report shapes it."""
    report = build_report(
        row["tenant_id"],
        month,
        {
            "total_cost_cents": row["total_cost_cents"],
            "estimated_cost_cents": row["estimated_cost_cents"],
            "total_calls": row["calls"],
            "total_input_tokens": row["input_tokens"],
            "total_output_tokens": row["output_tokens"],
            "model_breakdown": row["model_breakdown"],
            "endpoint_breakdown": row["endpoint_breakdown"],
            "kind_breakdown": row.get("kind_breakdown"),
        },
        [],
        row["monthly_cap_cents"],
        ZERO,
    )
    return TenantMonthCosts(
        tenant_name=row["tenant_name"], **report.model_dump(include=set(_TENANT_FIELDS))
    )


def build_monthly(month: date, rows: Sequence[Mapping[str, Any]]) -> FinanceMonthlyCosts:
    """The finance month from the definer function's rows (already most spent first)."""
    total = _sum(r["total_cost_cents"] for r in rows)
    estimated = _sum(r["estimated_cost_cents"] for r in rows)
    tenants = [tenant_month(month, r) for r in rows]
    cached = _sum(Decimal(t.cached_cost_cents) for t in tenants)
    uncached = _sum(Decimal(t.uncached_cost_cents) for t in tenants)
    saved = _sum(Decimal(t.caching_saved_cents) for t in tenants)
    return FinanceMonthlyCosts(
        month=month_label(month),
        tenant_count=len(rows),
        total_cost_usd=usd_text(total),
        total_cost_cents=cents_text(total),
        estimated_cost_usd=usd_text(estimated),
        estimated_cost_cents=cents_text(estimated),
        calls=sum(int(r["calls"]) for r in rows),
        input_tokens=sum(int(r["input_tokens"]) for r in rows),
        output_tokens=sum(int(r["output_tokens"]) for r in rows),
        cached_cost_usd=usd_text(cached),
        cached_cost_cents=exact_cents_text(cached),
        uncached_cost_usd=usd_text(uncached),
        uncached_cost_cents=exact_cents_text(uncached),
        caching_saved_usd=signed_usd_text(saved),
        caching_saved_cents=exact_cents_text(saved),
        tenants=tenants,
    )


def _days_of(month: date) -> list[date]:
    count = calendar.monthrange(month.year, month.month)[1]
    return [month + timedelta(days=i) for i in range(count)]


def build_daily(month: date, rows: Sequence[Mapping[str, Any]]) -> FinanceDailyCosts:
    """Every day of the month stacked by model, summed exactly across tenants."""
    cost: defaultdict[tuple[date, str], Decimal] = defaultdict(Decimal)
    calls: defaultdict[tuple[date, str], int] = defaultdict(int)
    by_model: defaultdict[str, Decimal] = defaultdict(Decimal)
    with exact_arithmetic():
        for r in rows:
            key = (r["day"], r["model"])
            cost[key] += r["cost_cents"]
            calls[key] += int(r["calls"])
            by_model[r["model"]] += r["cost_cents"]
    models = sorted(by_model, key=lambda m: (-by_model[m], m))
    days = []
    for day in _days_of(month):
        present = [m for m in models if (day, m) in cost]
        day_total = _sum(cost[(day, m)] for m in present)
        days.append(
            DayCosts(
                day=day,
                calls=sum(calls[(day, m)] for m in present),
                cost_usd=usd_text(day_total),
                cost_cents=cents_text(day_total),
                by_model=[
                    ModelDayCost(
                        model=m,
                        calls=calls[(day, m)],
                        cost_usd=usd_text(cost[(day, m)]),
                        cost_cents=cents_text(cost[(day, m)]),
                    )
                    for m in present
                ],
            )
        )
    total = _sum(by_model.values())
    return FinanceDailyCosts(
        month=month_label(month),
        models=models,
        total_cost_usd=usd_text(total),
        total_cost_cents=cents_text(total),
        days=days,
        rows=[
            TenantDayModelCost(
                day=r["day"],
                tenant_id=r["tenant_id"],
                model=r["model"],
                calls=int(r["calls"]),
                cost_usd=usd_text(r["cost_cents"]),
                cost_cents=cents_text(r["cost_cents"]),
            )
            for r in rows
        ],
    )


async def monthly_costs(pool: asyncpg.Pool, month: date) -> FinanceMonthlyCosts:
    """Every tenant's month, read in one statement (one snapshot) through the definer function."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        rows = await repository.monthly_rows(conn, month)
    return build_monthly(month, rows)


async def daily_costs(pool: asyncpg.Pool, month: date) -> FinanceDailyCosts:
    """Settled spend per day and model of a month, across tenants, through the definer function."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        rows = await repository.daily_rows(conn, month)
    return build_daily(month, rows)
