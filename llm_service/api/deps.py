"""Request dependencies: the pool, the settings, the authenticated tenant, the services.

Every dependency here is `async def`: FastAPI runs a plain `def` dependency in a worker thread,
a hop that costs more than the rest of a cached hit's Python work.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import Depends, Request

from llm_service.errors import ServiceError
from llm_service.explanations.service import ExplanationService
from llm_service.logging_setup import TENANT_ID
from llm_service.settings import Settings
from llm_service.tenants.service import authenticate, presented_key_hash


async def get_pool(request: Request) -> asyncpg.Pool:
    """The application role's connection pool."""
    pool: asyncpg.Pool = request.app.state.pool
    return pool


async def get_app_settings(request: Request) -> Settings:
    """The settings the application was created with."""
    settings: Settings = request.app.state.settings
    return settings


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def _authorization(request: Request) -> str | None:
    """The request's one Authorization header; several are refused (400), never one picked.

    400, not 401: the request is malformed (HTTP allows one Authorization field), and which
    tenant it is for is ambiguous; a 401 would say the key is wrong when it may not be.
    """
    values = request.headers.getlist("authorization")
    if len(values) > 1:
        raise ServiceError(
            "send one Authorization header, not several", code="ambiguous_credentials"
        )
    return values[0] if values else None


async def current_tenant(
    request: Request,
    pool: PoolDep,
) -> UUID:
    """The tenant whose API key authorises this request (401 otherwise; 400 for several)."""
    tenant_id = await authenticate(pool, _authorization(request))
    TENANT_ID.set(str(tenant_id))
    return tenant_id


TenantDep = Annotated[UUID, Depends(current_tenant)]


async def api_key_hash(
    request: Request,
) -> str:
    """The presented API key's hash, for a service that resolves it in its own transaction.

    The route must hand it to a service that authenticates with it (as `ExplanationService`
    does through `db.pool.key_transaction`): this dependency alone authorises nothing.
    """
    return presented_key_hash(_authorization(request))


ApiKeyHashDep = Annotated[str, Depends(api_key_hash)]


async def explanation_service(request: Request) -> ExplanationService:
    """The process's explanation service, built by the application's lifespan."""
    service: ExplanationService | None = getattr(request.app.state, "explanations", None)
    if service is None:
        raise RuntimeError("the explanation service is built by the lifespan, which did not run")
    return service


ExplanationServiceDep = Annotated[ExplanationService, Depends(explanation_service)]
