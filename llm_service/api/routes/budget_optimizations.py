"""Budget optimisation jobs: queue one, read it."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Response

from llm_service.api.deps import PoolDep, SettingsDep, TenantDep
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
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> BudgetOptimizationOut:
    """Queue a budget optimisation; answers 202 with its id at once (200 for a repeated key)."""
    job, created = await service.create(pool, settings, tenant_id, body, idempotency_key)
    response.headers["Location"] = f"/v1/budget-optimizations/{job.id}"
    if not created:
        response.status_code = 200
    return job


@router.get("/{job_id}", response_model=BudgetOptimizationOut)
async def get_budget_optimization(
    job_id: UUID, tenant_id: TenantDep, pool: PoolDep
) -> BudgetOptimizationOut:
    """A job: its state, the proposal with its figures, the rationale and the exact spend."""
    return await service.get(pool, tenant_id, job_id)
