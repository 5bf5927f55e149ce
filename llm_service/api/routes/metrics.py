"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response

from llm_service.api.deps import PoolDep
from llm_service.metrics import QUEUE_DEPTH, render
from llm_service.metrics_repository import queue_depth

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics(pool: PoolDep) -> Response:
    """Every series, with the queue depth read from the database at scrape time."""
    try:
        async with pool.acquire(timeout=2) as conn:
            depth = await queue_depth(conn)
        QUEUE_DEPTH.clear()
        for kind, status, runs in depth:
            QUEUE_DEPTH.labels(kind, status).set(runs)
    except Exception:  # metrics must answer even when the database does not
        pass
    return Response(render(), media_type="text/plain; version=0.0.4; charset=utf-8")
