"""What the routes that queue a job share: the Idempotency-Key header and the 202/200 answer."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Header, Response

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def answer_queued(response: Response, collection: str, run_id: UUID, created: bool) -> None:
    """Point at the run (Location); 202 for a new run, 200 for a retry of the same request."""
    response.headers["Location"] = f"{collection}/{run_id}"
    if not created:
        response.status_code = 200
