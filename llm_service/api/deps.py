"""Request dependencies: the pool, the settings and the authenticated tenant."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import Depends, Header, Request

from llm_service.logging_setup import TENANT_ID
from llm_service.settings import Settings
from llm_service.tenants.service import authenticate


def get_pool(request: Request) -> asyncpg.Pool:
    """The application role's connection pool."""
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def get_app_settings(request: Request) -> Settings:
    """The settings the application was created with."""
    settings: Settings = request.app.state.settings
    return settings


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def current_tenant(
    request: Request,
    pool: PoolDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> UUID:
    """The tenant whose API key authorises this request (401 otherwise)."""
    tenant_id = await authenticate(pool, authorization)
    request.state.tenant_id = tenant_id
    TENANT_ID.set(str(tenant_id))
    return tenant_id


TenantDep = Annotated[UUID, Depends(current_tenant)]
