"""The FastAPI application: lifespan (pool), middleware, error handlers, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI

from llm_service.api.body_limit import BodySizeLimit
from llm_service.api.errors import install_error_handlers
from llm_service.api.routes import costs, health, tenants
from llm_service.db.pool import create_pool
from llm_service.db.runtime import database_runtime
from llm_service.settings import Settings, get_settings


def create_app(settings: Settings | None = None, *, pool: asyncpg.Pool | None = None) -> FastAPI:
    """Build the application; with `pool` given, use it instead of opening one at start-up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = pool is None
        if owned:
            urls = database_runtime(settings).urls
            app.state.pool = await create_pool(
                urls.app,
                application_name="llm-service-api",
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                statement_timeout_ms=settings.db_statement_timeout_ms,
            )
        try:
            yield
        finally:
            if owned:
                await app.state.pool.close()

    app = FastAPI(
        title="Attribution LLM service",
        version="0.1.0",
        summary="Explanations, bounded investigations and exact LLM costs for attribution data.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(costs.router)
    app.include_router(tenants.router)
    return app
