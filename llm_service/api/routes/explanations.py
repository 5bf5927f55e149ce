"""Explanations of dashboard numbers: `POST /v1/explanations` (cache first, see the service)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request, Response

from llm_service.explanations.schemas import ExplanationRequest, ExplanationResponse
from llm_service.explanations.service import ExplanationService, Timings
from llm_service.logging_setup import TENANT_ID
from llm_service.settings import Settings
from llm_service.tenants.service import authenticate

router = APIRouter(prefix="/v1/explanations", tags=["explanations"])


@dataclass(frozen=True)
class Caller:
    """The authenticated tenant, the service, and when the request reached the route."""

    tenant_id: UUID
    service: ExplanationService
    arrived: float


def explanation_service(request: Request) -> ExplanationService:
    """The process's explanation service (built on first use when the lifespan did not run)."""
    state = request.app.state
    service: ExplanationService | None = getattr(state, "explanations", None)
    if service is None:
        settings: Settings = state.settings
        service = ExplanationService(settings, state.pool, getattr(state, "gateway", None))
        service.hit_counter.start(state.pool, interval_s=settings.explanation_hit_flush_interval_s)
        state.explanations = service
    return service


async def _caller(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    """Authenticate as `deps.current_tenant` does, in ONE async dependency (see below)."""
    # On the hit path every dependency counts: FastAPI runs a plain `def` dependency (as
    # `deps.get_pool` is) in a worker thread, a hop that costs more than the rest of a hit's
    # Python work, and each dependency level adds its own resolution overhead.
    arrived = time.perf_counter()
    tenant_id = await authenticate(request.app.state.pool, authorization)
    request.state.tenant_id = tenant_id
    TENANT_ID.set(str(tenant_id))
    return Caller(tenant_id, explanation_service(request), arrived)


CallerDep = Annotated[Caller, Depends(_caller)]


@router.post(
    "",
    response_model=ExplanationResponse,
    responses={401: {"description": "No valid API key"}, 422: {"description": "Invalid request"}},
)
async def create_explanation(body: ExplanationRequest, caller: CallerDep) -> Response:
    """Explain a dashboard's numbers: a cached answer at once, else computed (or degraded)."""
    timings = Timings()
    timings.add("auth", time.perf_counter() - caller.arrived)
    result = await caller.service.explain(caller.tenant_id, body, timings)
    content = result.model_dump_json()
    total_ms = (time.perf_counter() - caller.arrived) * 1000.0
    return Response(
        content=content,
        media_type="application/json",
        headers={
            "X-Server-Time-Ms": f"{total_ms:.2f}",
            "Server-Timing": f"{timings.header()}, total;dur={total_ms:.2f}",
        },
    )
