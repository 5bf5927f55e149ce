"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response

from llm_service.api.deps import PoolDep
from llm_service.metrics import QUEUE_DEPTH, render

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics(pool: PoolDep) -> Response:
    """Every series, with the queue depth read from the database at scrape time."""
    try:
        async with pool.acquire(timeout=2) as conn:
            rows = await conn.fetch("SELECT kind, status, runs FROM fn_queue_depth()")
        QUEUE_DEPTH.clear()
        for row in rows:
            QUEUE_DEPTH.labels(row["kind"], row["status"]).set(row["runs"])
    except Exception:  # metrics must answer even when the database does not
        pass
    return Response(render(), media_type="text/plain; version=0.0.4; charset=utf-8")
