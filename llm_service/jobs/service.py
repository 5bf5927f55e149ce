"""Queueing a run of any kind: ONE Idempotency-Key rule (`llm_service.idempotency`) for all.

Same key and same request: the original run (created False); same key and a different request:
409 with a JSON error; no key: a new run. The unique index on (tenant_id, idempotency_key)
settles concurrent retries in the database.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import asyncpg

from llm_service import idempotency
from llm_service.input_rules import check_idempotency_key
from llm_service.jobs import repository
from llm_service.jobs.kinds import JobTable


def check_key(idempotency_key: str | None) -> None:
    """Refuse a malformed Idempotency-Key (422) before any work."""
    check_idempotency_key(idempotency_key)


async def queue(
    conn: asyncpg.Connection,
    table: JobTable,
    values: Mapping[str, Any],
    idempotency_key: str | None,
    *,
    returning: str,
    compared: Collection[str],
) -> tuple[dict[str, Any], bool]:
    """Insert a queued run of `values` in the caller's tenant transaction, or return the run
    this key already made (created False) when its `compared` columns hold the same request;
    Conflict (409) when they do not."""
    check_key(idempotency_key)
    row, created = await repository.insert_idempotent(
        conn, table, values, idempotency_key, returning
    )
    idempotency.replay(
        created, {key: row[key] for key in compared}, {key: values[key] for key in compared}
    )
    return row, created
