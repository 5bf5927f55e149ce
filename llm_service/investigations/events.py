"""Progress events of a run, written as rows so any process can stream them (SSE)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from llm_service.db.pool import tenant_transaction
from llm_service.investigations import repository


class EventSink:
    """Appends a run's events in their own short transactions."""

    def __init__(self, pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> None:
        """A sink for one run."""
        self.pool = pool
        self.tenant_id = tenant_id
        self.run_id = run_id

    async def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """Record one event."""
        async with tenant_transaction(self.pool, self.tenant_id) as conn:
            await repository.add_event(conn, self.tenant_id, self.run_id, event_type, data)
