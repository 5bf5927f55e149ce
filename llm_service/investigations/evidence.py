"""Running tools for a run and keeping their results as citable evidence."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from llm_service.db.pool import encode_json, tenant_transaction
from llm_service.investigations import repository
from llm_service.tools.parse import BadArguments
from llm_service.tools.parse import parse_arguments as bounded_arguments
from llm_service.tools.repository import record_tool_call
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

    async def gather(
        self, step: int, calls: list[tuple[str, str | dict[str, Any]]]
    ) -> list[Evidence]:
        """Run several tools concurrently, record each (even failures), emit their events."""
        outcomes = await asyncio.gather(
            *(run_tool(self.pool, self.tenant_id, name, args) for name, args in calls)
        )
        recorded: list[Evidence] = []
        async with tenant_transaction(self.pool, self.tenant_id) as conn:
            for outcome in outcomes:
                call_id = await record_tool_call(conn, self.tenant_id, self.run_id, step, outcome)
                evidence = Evidence(str(call_id), outcome)
                recorded.append(evidence)
                await repository.add_event(
                    conn,
                    self.tenant_id,
                    self.run_id,
                    "tool_call",
                    {
                        "step": step,
                        "evidence_id": evidence.id,
                        "tool": outcome.name,
                        "arguments": outcome.arguments,
                        "error": outcome.error,
                        "duration_ms": outcome.duration_ms,
                        "truncated": outcome.truncated,
                    },
                )
        self.items.extend(recorded)
        return recorded


def parse_arguments(raw: str) -> str | dict[str, Any]:
    """Tool arguments as a dict if they are one bounded JSON object, else the raw text (the
    tool runner reports what is wrong with it, and keeps only a bounded part)."""
    try:
        return bounded_arguments(raw)
    except BadArguments:
        return raw
