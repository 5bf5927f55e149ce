"""What the routes that queue a job share: the Idempotency-Key header and the 202/200 answer."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request, Response

from llm_service.errors import ServiceError


def idempotency_key(request: Request) -> str | None:
    """The request's one Idempotency-Key header; several are refused (400), never one picked."""
    values = request.headers.getlist("idempotency-key")
    if len(values) > 1:
        raise ServiceError(
            "send one Idempotency-Key header, not several", code="ambiguous_idempotency_key"
        )
    return values[0] if values else None


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]


def answer_queued(response: Response, collection: str, run_id: UUID, created: bool) -> None:
    """Point at the run (Location); 202 for a new run, 200 for a retry of the same request."""
    response.headers["Location"] = f"{collection}/{run_id}"
    if not created:
        response.status_code = 200
