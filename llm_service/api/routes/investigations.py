"""Investigations: queue, read, list, cancel, and stream progress (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query, Response
from sse_starlette.sse import EventSourceResponse

from llm_service.api.deps import PoolDep, SettingsDep, TenantDep
from llm_service.db.pool import encode_json
from llm_service.investigations import service
from llm_service.investigations.schemas import (
    InvestigationCreate,
    InvestigationLimits,
    InvestigationOut,
    InvestigationPage,
)
from llm_service.jobs.routes import IdempotencyKey, answer_queued

router = APIRouter(prefix="/v1/investigations", tags=["investigations"])
# Event sequence numbers are bigint: a Last-Event-ID beyond that is refused, not sent to the DB.
MAX_EVENT_SEQ = 2**63 - 1


@router.post("", status_code=202, response_model=InvestigationOut)
async def create_investigation(
    body: InvestigationCreate,
    tenant_id: TenantDep,
    pool: PoolDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> InvestigationOut:
    """Queue an investigation; answers 202 with its id at once."""
    run, created = await service.create(pool, settings, tenant_id, body, idempotency_key)
    answer_queued(response, router.prefix, run.id, created)
    return run


@router.get("", response_model=InvestigationPage)
async def list_investigations(
    tenant_id: TenantDep,
    pool: PoolDep,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: datetime | None = None,
) -> InvestigationPage:
    """The tenant's investigations, newest first."""
    return await service.list_page(pool, tenant_id, status=status, limit=limit, before=before)


@router.get("/limits", response_model=InvestigationLimits)
async def investigation_limits(_: TenantDep, settings: SettingsDep) -> InvestigationLimits:
    """The most a run may ask for (cost, time, steps): requests above these are refused."""
    return service.limits(settings)


@router.get("/{investigation_id}", response_model=InvestigationOut)
async def get_investigation(
    investigation_id: UUID, tenant_id: TenantDep, pool: PoolDep
) -> InvestigationOut:
    """A run with its findings, tool calls and LLM calls."""
    return await service.get(pool, tenant_id, investigation_id)


@router.post("/{investigation_id}/cancel", response_model=InvestigationOut)
async def cancel_investigation(
    investigation_id: UUID, tenant_id: TenantDep, pool: PoolDep
) -> InvestigationOut:
    """Cancel a run (at once if queued; at the next heartbeat if running)."""
    return await service.cancel(pool, tenant_id, investigation_id)


@router.get("/{investigation_id}/events")
async def investigation_events(
    investigation_id: UUID,
    tenant_id: TenantDep,
    pool: PoolDep,
    last_event_id: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_EVENT_SEQ)
    ] = None,
) -> EventSourceResponse:
    """Progress as server-sent events: history first, then live, ending with the final state."""
    stream = service.stream_events(pool, tenant_id, investigation_id, after_seq=last_event_id or 0)
    first = await anext(stream, None)  # 404 before the stream starts, not inside it

    async def events() -> AsyncIterator[dict[str, Any]]:
        if first is None:
            return
        yield _sse(first)
        async for event in stream:
            yield _sse(event)

    return EventSourceResponse(events(), ping=15)


def _sse(event: dict[str, Any]) -> dict[str, Any]:
    payload = {
        "seq": event["seq"],
        "type": event["event_type"],
        "at": event["created_at"],
        **event["data"],
    }
    return {"id": str(event["seq"]), "event": event["event_type"], "data": encode_json(payload)}
