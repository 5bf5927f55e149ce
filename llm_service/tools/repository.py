"""Recording tool calls in investigation_tool_calls (the caller owns the transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from llm_service.tools.runner import ToolOutcome

_INSERT_SQL = """
INSERT INTO investigation_tool_calls (tenant_id, investigation_id, step, tool_name, input_params,
                                      output, output_truncated, duration_ms, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING id
"""

# Several calls of one step in one statement, with the ids their evidence already carries.
_INSERT_MANY_SQL = """
INSERT INTO investigation_tool_calls (id, tenant_id, investigation_id, step, tool_name,
                                      input_params, output, output_truncated, duration_ms, error)
SELECT c.id, $1, $2, $3, c.tool_name, c.input_params, c.output, c.output_truncated,
       c.duration_ms, c.error
FROM unnest($4::uuid[], $5::text[], $6::jsonb[], $7::jsonb[], $8::boolean[], $9::integer[],
            $10::text[]) AS c(id, tool_name, input_params, output, output_truncated, duration_ms,
                              error)
"""

_LIST_SQL = """
SELECT id, investigation_id, step, tool_name, input_params, output, output_truncated,
       duration_ms, error, created_at
FROM investigation_tool_calls
WHERE investigation_id = $1
ORDER BY step, created_at, id
LIMIT 1000
"""


def _input_params(arguments: dict[str, Any] | str) -> dict[str, Any]:
    """Arguments as a JSON object; unparseable text is kept under `raw`."""
    return arguments if isinstance(arguments, dict) else {"raw": arguments}


async def record_tool_call(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    investigation_id: UUID,
    step: int,
    outcome: ToolOutcome,
) -> UUID:
    """Insert one tool call of an investigation and return its id."""
    call_id: UUID = await conn.fetchval(
        _INSERT_SQL,
        tenant_id,
        investigation_id,
        step,
        outcome.name,
        _input_params(outcome.arguments),
        outcome.output,
        outcome.truncated,
        outcome.duration_ms,
        outcome.error,
    )
    return call_id


async def record_tool_calls(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    investigation_id: UUID,
    step: int,
    calls: Sequence[tuple[UUID, ToolOutcome]],
) -> None:
    """Insert the tool calls of one step, each under the id given with it, in one statement."""
    if not calls:
        return
    await conn.execute(
        _INSERT_MANY_SQL,
        tenant_id,
        investigation_id,
        step,
        [call_id for call_id, _ in calls],
        [o.name for _, o in calls],
        [_input_params(o.arguments) for _, o in calls],
        [o.output for _, o in calls],
        [o.truncated for _, o in calls],
        [o.duration_ms for _, o in calls],
        [o.error for _, o in calls],
    )


async def list_tool_calls(conn: asyncpg.Connection, investigation_id: UUID) -> list[dict[str, Any]]:
    """The tool calls of an investigation (of the transaction's tenant), in order."""
    return [dict(row) for row in await conn.fetch(_LIST_SQL, investigation_id)]
