"""Explanations of dashboard numbers: `POST /v1/explanations` (cache first, see the service)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from llm_service.api.deps import ApiKeyHashDep, ExplanationServiceDep
from llm_service.explanations.schemas import ExplanationRequest, ExplanationResponse
from llm_service.explanations.service import Timings
from llm_service.workers.heap import gc_paused_ms

router = APIRouter(prefix="/v1/explanations", tags=["explanations"])


@router.post(
    "",
    response_model=ExplanationResponse,
    responses={401: {"description": "No valid API key"}, 422: {"description": "Invalid request"}},
)
async def create_explanation(
    body: ExplanationRequest, key_hash: ApiKeyHashDep, service: ExplanationServiceDep
) -> Response:
    """Explain a dashboard's numbers: a cached answer at once, else computed (or degraded)."""
    # The key is checked by the service, in the request's one transaction (401 if unknown).
    arrived, gc_before = time.perf_counter(), gc_paused_ms()
    timings = Timings()
    result = await service.explain(key_hash, body, timings)
    content = result.model_dump_json()
    total_ms = (time.perf_counter() - arrived) * 1000.0
    if (gc_ms := gc_paused_ms() - gc_before) > 0:  # the loop stood still for collections
        timings.add("gc", gc_ms / 1000.0)
    return Response(
        content=content,
        media_type="application/json",
        headers={
            "X-Server-Time-Ms": f"{total_ms:.2f}",
            "Server-Timing": f"{timings.header()}, total;dur={total_ms:.2f}",
        },
    )
