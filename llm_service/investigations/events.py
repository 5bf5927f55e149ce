"""Progress events of a run, written as rows so any process can stream them (SSE).

Writing each event in a transaction of its own costs a pooled connection and three round trips
more per event. An event may instead be deferred: it is then written, in order and before any
later event, by the run's next transaction that writes events (its next tool records,
`emit`/`flush`, or the transaction that records the run's end with its "final" event). A deferred
event is lost if the run is cut off before that write, e.g. its lease lost (the ledger and the
tool records, written at once, stay the record of what the run did).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from llm_service.db.pool import tenant_transaction
from llm_service.investigations import repository

#: (event type, data)
Event = tuple[str, dict[str, Any]]


class EventSink:
    """Appends a run's events: at once in a short transaction, or with the run's next write."""

    def __init__(self, pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> None:
        """A sink for one run."""
        self.pool = pool
        self.tenant_id = tenant_id
        self.run_id = run_id
        self._pending: list[Event] = []

    @property
    def pending(self) -> int:
        """Events deferred and not written yet."""
        return len(self._pending)

    def defer(self, event_type: str, data: dict[str, Any]) -> None:
        """Record an event with the run's next write of events (see the module's docstring)."""
        self._pending.append((event_type, data))

    async def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """Record one event now (after any deferred ones), in one transaction."""
        async with tenant_transaction(self.pool, self.tenant_id) as conn:
            await self.write(conn, [(event_type, data)])

    async def flush(self) -> None:
        """Write the deferred events now, if there are any."""
        if self._pending:
            async with tenant_transaction(self.pool, self.tenant_id) as conn:
                await self.write(conn, [])

    async def write(self, conn: asyncpg.Connection, events: list[Event]) -> None:
        """Write the deferred events, then `events`, in the caller's tenant transaction (one
        statement)."""
        batch = [*self._pending, *events]
        if not batch:
            return
        await repository.add_events(conn, self.tenant_id, self.run_id, batch)
        # Cleared only now: if the statement failed, they stay for the next write.
        self._pending = self._pending[len(batch) - len(events) :]
