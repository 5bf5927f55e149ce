"""Budget optimisation jobs: queue one, read it."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from llm_service.api.deps import PoolDep, SettingsDep, TenantDep
from llm_service.jobs.routes import IdempotencyKey, answer_queued
from llm_service.optimizations import service
from llm_service.optimizations.schemas import BudgetOptimizationCreate, BudgetOptimizationOut

router = APIRouter(prefix="/v1/budget-optimizations", tags=["budget optimizations"])


@router.post("", status_code=202, response_model=BudgetOptimizationOut)
async def create_budget_optimization(
    body: BudgetOptimizationCreate,
    tenant_id: TenantDep,
    pool: PoolDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> BudgetOptimizationOut:
    """Queue a budget optimisation; answers 202 with its id at once (200 for a repeated key)."""
    job, created = await service.create(pool, settings, tenant_id, body, idempotency_key)
    answer_queued(response, router.prefix, job.id, created)
    return job


@router.get("/{job_id}", response_model=BudgetOptimizationOut)
async def get_budget_optimization(
    job_id: UUID, tenant_id: TenantDep, pool: PoolDep
) -> BudgetOptimizationOut:
    """A job: its state, the proposal with its figures, the rationale and the exact spend."""
    return await service.get(pool, tenant_id, job_id)
