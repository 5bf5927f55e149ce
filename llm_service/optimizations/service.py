"""Budget optimisation rules for the API: create (idempotently) and read."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from budgets.money import cents_to_usd, usd_to_cents
from llm_service.db.pool import tenant_transaction
from llm_service.errors import InvalidRequest, NotFound
from llm_service.jobs import service as queueing
from llm_service.optimizations import repository
from llm_service.optimizations.schemas import (
    MAX_COST_USD,
    BudgetOptimizationCreate,
    BudgetOptimizationOut,
    LlmCallOut,
)
from llm_service.settings import Settings


async def create(
    pool: asyncpg.Pool,
    settings: Settings,
    tenant_id: UUID,
    body: BudgetOptimizationCreate,
    idempotency_key: str | None,
) -> tuple[BudgetOptimizationOut, bool]:
    """Queue a job; a reused Idempotency-Key returns the same job, or 409 when the request
    differs (`llm_service.idempotency`)."""
    queueing.check_key(idempotency_key)
    params = body.params()
    max_cost = min(settings.investigation_max_cost_usd, MAX_COST_USD)
    async with tenant_transaction(pool, tenant_id) as conn:
        if body.bounds:
            unknown = sorted(
                set(body.bounds) - await repository.known_channels(conn, list(body.bounds))
            )
            if unknown:
                raise InvalidRequest(f"unknown channel code(s) in bounds: {', '.join(unknown)}")
        values = {
            "tenant_id": tenant_id,
            "params": params,
            "max_cost_cents": usd_to_cents(max_cost),
        }
        row, created = await queueing.queue(
            conn,
            repository.TABLE,
            values,
            idempotency_key,
            request=params,
            returning=repository.COLUMNS,
            compared=("params",),
        )
    return to_out(row), created


async def get(pool: asyncpg.Pool, tenant_id: UUID, job_id: UUID) -> BudgetOptimizationOut:
    """One job with its LLM calls (404 for another tenant's id)."""
    async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
        row = await repository.get(conn, job_id)
        if row is None:
            raise NotFound("no such budget optimization")
        calls = await repository.llm_calls(conn, job_id)
    out = to_out(row)
    out.llm_calls = [
        LlmCallOut(
            id=c["id"],
            model=c["model"],
            attempt=c["attempt"],
            status=c["status"],
            input_tokens=c["input_tokens"],
            output_tokens=c["output_tokens"],
            cost_usd=_usd(c["cost_cents"]),
            cost_is_estimate=c["cost_is_estimate"],
        )
        for c in calls
    ]
    return out


def to_out(row: dict[str, Any]) -> BudgetOptimizationOut:
    """The API form of a job row."""
    params: dict[str, Any] = row["params"]
    recommendations: dict[str, Any] | None = row["recommendations"]
    risks = list((recommendations or {}).get("risks") or [])
    return BudgetOptimizationOut(
        id=row["id"],
        status=row["status"],
        reason=row["reason"],
        degraded=row["degraded"],
        total_budget_usd=params["total_budget_usd"],
        period=params["period"],
        model_type=params["model_type"],
        bounds=params.get("bounds") or {},
        recommendations=recommendations,
        rationale=row["rationale"],
        risks=risks,
        cost_usd=_usd(row["cost_cents"]),
        max_cost_usd=_usd(row["max_cost_cents"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _usd(cents: Decimal) -> str:
    return format(cents_to_usd(cents).normalize(), "f")
