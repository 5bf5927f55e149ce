"""Model outputs that failed validation, kept for review in llm_validation_failures."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

_INSERT_FAILURE = """
INSERT INTO llm_validation_failures (tenant_id, endpoint, model, llm_api_call_id,
    validation_error, request_payload, response_payload)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""


async def insert_validation_failure(
    conn: asyncpg.Connection,
    *,
    tenant_id: UUID,
    endpoint: str,
    model: str | None,
    call_id: UUID | None,
    error: str,
    request_payload: dict[str, Any],
    response_payload: str,
) -> None:
    """Insert one failed output (the caller's transaction has the tenant set)."""
    await conn.execute(
        _INSERT_FAILURE,
        tenant_id,
        endpoint,
        model,
        call_id,
        error,
        request_payload,
        response_payload,
    )
