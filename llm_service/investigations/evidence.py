"""Running tools for a run and keeping their results as citable evidence."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from llm_service.db.pool import encode_json, tenant_transaction
from llm_service.investigations import repository
from llm_service.investigations.events import Event, EventSink
from llm_service.tools.parse import BadArguments
from llm_service.tools.parse import parse_arguments as bounded_arguments
from llm_service.tools.repository import record_tool_calls
from llm_service.tools.runner import ToolOutcome, run_tool


@dataclass(frozen=True)
class Evidence:
    """One recorded tool call: its id (what findings cite) and its outcome."""

    id: str
    outcome: ToolOutcome

    def for_model(self) -> str:
        """The tool result as the model reads it, carrying its evidence id."""
        body: dict[str, Any] = {"evidence_id": self.id}
        if self.outcome.error:
            body["error"] = self.outcome.error
        else:
            body["result"] = self.outcome.output
            if self.outcome.truncated:
                body["truncated"] = True
        return encode_json(body)


class EvidenceLog:
    """The evidence of one run, recorded in investigation_tool_calls as it is gathered."""

    def __init__(self, pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> None:
        """A log for one run."""
        self.pool = pool
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.items: list[Evidence] = []

    @property
    def ids(self) -> set[str]:
        """Every evidence id recorded so far."""
        return {e.id for e in self.items}

    async def run(self, calls: list[tuple[str, str | dict[str, Any]]]) -> list[Evidence]:
        """Run several tools concurrently; each result carries the id it will be recorded under
        (nothing is recorded yet: see `record`)."""
        outcomes = await asyncio.gather(
            *(run_tool(self.pool, self.tenant_id, name, args) for name, args in calls)
        )
        return [Evidence(str(uuid.uuid4()), outcome) for outcome in outcomes]

    async def record(
        self,
        step: int,
        gathered: list[Evidence],
        events: EventSink | None = None,
        then: Sequence[Event] = (),
    ) -> None:
        """Record a step's tool calls (even failures) and their events in one transaction: the
        run's deferred events first (from `events`), the tool calls' own, then `then`."""
        tool_events: list[Event] = [
            (
                "tool_call",
                {
                    "step": step,
                    "evidence_id": evidence.id,
                    "tool": evidence.outcome.name,
                    "arguments": evidence.outcome.arguments,
                    "error": evidence.outcome.error,
                    "duration_ms": evidence.outcome.duration_ms,
                    "truncated": evidence.outcome.truncated,
                },
            )
            for evidence in gathered
        ]
        async with tenant_transaction(self.pool, self.tenant_id) as conn:
            await record_tool_calls(
                conn,
                self.tenant_id,
                self.run_id,
                step,
                [(uuid.UUID(evidence.id), evidence.outcome) for evidence in gathered],
            )
            if events is not None:
                await events.write(conn, [*tool_events, *then])
            else:
                await repository.add_events(
                    conn, self.tenant_id, self.run_id, [*tool_events, *then]
                )
        self.items.extend(gathered)

    async def gather(
        self, step: int, calls: list[tuple[str, str | dict[str, Any]]]
    ) -> list[Evidence]:
        """Run several tools concurrently, then record each (even failures) with its event."""
        gathered = await self.run(calls)
        await self.record(step, gathered)
        return gathered


def parse_arguments(raw: str) -> str | dict[str, Any]:
    """Tool arguments as a dict if they are one bounded JSON object, else the raw text (the
    tool runner reports what is wrong with it, and keeps only a bounded part)."""
    try:
        return bounded_arguments(raw)
    except BadArguments:
        return raw
