"""The FastAPI application: lifespan (pool), middleware, error handlers, routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI

from llm_service.api.body_limit import BodySizeLimit
from llm_service.api.errors import install_error_handlers
from llm_service.api.header_limit import HeaderSizeLimit
from llm_service.api.observability import RequestContext
from llm_service.api.routes import (
    budget_optimizations,
    costs,
    explanations,
    finance,
    health,
    investigations,
    metrics,
    tenants,
    workbench,
)
from llm_service.api.worker_election import WorkerLock, run_when_elected
from llm_service.db.pool import create_pool
from llm_service.db.runtime import database_runtime
from llm_service.explanations.service import ExplanationService
from llm_service.llm.pricing import gateway_from_settings
from llm_service.llm.warmup import warm_up
from llm_service.settings import Settings, get_settings
from llm_service.workers.heap import freeze_startup_heap, track_gc_pauses
from llm_service.workers.sweeper import start_sweeper


def create_app(
    settings: Settings | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    run_workers: bool | None = None,
) -> FastAPI:
    """Build the application; with `pool` given, use it instead of opening one at start-up.

    Workers run in-process by default when the application opens its own pool (`serve`).
    """
    settings = settings or get_settings()
    with_workers = (
        (pool is None and settings.workers_in_process > 0) if run_workers is None else run_workers
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = pool is None
        # The application role's URL, resolved once: for the pool, the flight locks' pool and
        # the lease keeper's connection (with a pool given: the settings' URL, maybe None).
        app_url = settings.app_database_url
        if owned:
            app_url = url = database_runtime(settings).urls.app
            app.state.pool = await create_pool(
                url,
                application_name="llm-service-api",
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                statement_timeout_ms=settings.db_statement_timeout_ms,
            )
        # Built at start-up so an unpriced model is refused before serving anything; litellm,
        # its prices and the tokenizers loaded here so that no request pays for them.
        if settings.llm_model:
            warm_up(settings)
        app.state.gateway = gateway_from_settings(settings, app.state.pool)
        # Explanations: the embedder loaded once, hit counts flushed in the background, and a
        # separate small pool for the single-flight locks (without an app URL: the main pool).
        app.state.explanations = await ExplanationService.start(
            settings,
            app.state.pool,
            app.state.gateway,
            app_database_url=app_url,
        )
        # Every serving process sweeps expired reservations (one of them per round does the work).
        sweeper = start_sweeper(app.state.pool, settings.ledger_sweep_interval_s) if owned else None
        worker_task = None
        # With several serve processes (`serve --workers N`) only the lock holder runs one;
        # the others keep trying, to take over from a holder that stops or dies.
        election = WorkerLock(settings.llm_service_data_dir / "serve-worker.lock")
        if with_workers:
            from llm_service.workers.worker import Worker

            worker = Worker(
                app.state.pool,
                app.state.gateway,
                concurrency=settings.worker_concurrency,
                lease_s=settings.worker_lease_s,
                shutdown_grace_s=settings.worker_shutdown_grace_s,
                # The lease keeper's own connection (heartbeats never wait for the pool).
                heartbeat_url=app_url,
                freeze_heap=False,  # frozen below, once, for the whole serving process
            )
            worker_task = asyncio.create_task(
                worker.run_until_stopped()
                if settings.serve_workers <= 1
                else run_when_elected(election, worker.run_until_stopped)
            )
        # Every serving process, with or without the worker: a full collection of the start-up
        # heap (litellm, tokenizers, the embedding model: ~470k objects) stalls the loop ~250 ms.
        freeze_startup_heap()
        track_gc_pauses()  # Server-Timing's `gc`: collections while a request was in flight
        try:
            yield
        finally:
            if worker_task is not None:
                # Graceful: stop claiming, let runs in flight finish within the grace, hand the
                # rest back (the worker bounds this itself; the wait is a safety net).
                worker.stop()
                if settings.serve_workers > 1 and not election.held:
                    worker_task.cancel()  # still waiting for the election: nothing runs
                    await asyncio.gather(worker_task, return_exceptions=True)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(worker_task, settings.worker_shutdown_grace_s + 15)
            election.release()
            if sweeper is not None:
                await sweeper.stop()
            await app.state.explanations.aclose()
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
    app.add_middleware(HeaderSizeLimit, max_bytes=settings.max_header_bytes)
    app.add_middleware(
        RequestContext, log_every=settings.http_log_every, slow_ms=settings.http_log_slow_ms
    )
    install_error_handlers(app)
    # The hot route first: Starlette tries routes in order, each a regular-expression match.
    app.include_router(explanations.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(costs.router)
    app.include_router(finance.router)
    app.include_router(finance.page_router)
    app.include_router(tenants.router)
    app.include_router(investigations.router)
    app.include_router(workbench.router)
    app.include_router(budget_optimizations.router)
    return app


def create_served_app() -> FastAPI:
    """The application of one `serve --workers N` process (uvicorn's factory): its own JSON
    logging first (a spawned process starts with none; the parent's does not carry over)."""
    from llm_service.logging_setup import configure_logging

    configure_logging()
    return create_app()
