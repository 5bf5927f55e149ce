"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from llm_service.api.deps import PoolDep
from llm_service.db import migrate
from llm_service.health import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(pool: PoolDep) -> dict[str, Any] | JSONResponse:
    """The database is reachable and at the migration head."""
    report = await readiness(pool, migrate.heads())
    if not report["ready"]:
        return JSONResponse(
            {"error": {"code": "unavailable", "message": report["problem"]}, **report},
            status_code=503,
        )
    return report
