"""The calling tenant's own record."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel

from llm_service.api.deps import PoolDep, TenantDep
from llm_service.tenants.service import tenant_profile

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


class TenantOut(BaseModel):
    """A tenant as it sees itself."""

    tenant_id: UUID
    name: str
    monthly_cap_usd: Decimal


@router.get("/me", response_model=TenantOut)
async def get_me(tenant_id: TenantDep, pool: PoolDep) -> TenantOut:
    """The tenant whose key authorises the request."""
    return TenantOut(**await tenant_profile(pool, tenant_id))


@router.get("/{tenant_id}", response_model=TenantOut)
async def get_tenant(tenant_id: UUID, caller: TenantDep, pool: PoolDep) -> TenantOut:
    """A tenant by id: only the caller itself is ever found."""
    return TenantOut(**await tenant_profile(pool, caller, requested=tenant_id))
