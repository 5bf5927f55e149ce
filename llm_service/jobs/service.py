"""Queueing a run of any kind: ONE Idempotency-Key rule (`llm_service.idempotency`) for all.

A key is taken once per tenant, whatever the kind (`job_idempotency_keys`, in the same
transaction as the run it names, with the sha256 of the canonical request). The same key and
the same request of the same kind: the original run (created False); the same key with a
different request, or for another kind: 409 with a JSON error; no key: a new run. The primary
key settles concurrent retries in the database: exactly one run, the others wait and replay.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from uuid import UUID

import asyncpg

from llm_service import idempotency
from llm_service.errors import Conflict
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
    request: Mapping[str, Any],
    returning: str,
    compared: Collection[str],
) -> tuple[dict[str, Any], bool]:
    """Insert a queued run of `values` in the caller's tenant transaction, or return the run
    this key already made (created False) when `request` (the validated request) is the same;
    Conflict (409) when it is not, or the key made a run of another kind. `compared`: the
    stored columns a retry of a key back-filled without a request hash must match."""
    check_key(idempotency_key)
    if idempotency_key is None:
        return await repository.insert_run(conn, table, values, None, returning), True
    tenant_id: UUID = values["tenant_id"]
    request_hash = idempotency.fingerprint(request)
    try:
        async with conn.transaction():  # a savepoint: a taken key leaves no run behind
            row = await repository.insert_run(conn, table, values, idempotency_key, returning)
            await repository.take_key(
                conn, tenant_id, idempotency_key, table.kind, row["id"], request_hash
            )
        return row, True
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name not in repository.KEY_TAKEN:
            raise
    return await _replay(conn, table, values, idempotency_key, request_hash, returning, compared)


async def _replay(
    conn: asyncpg.Connection,
    table: JobTable,
    values: Mapping[str, Any],
    idempotency_key: str,
    request_hash: str,
    returning: str,
    compared: Collection[str],
) -> tuple[dict[str, Any], bool]:
    """The run a taken key made, if this request is its retry; Conflict otherwise."""
    holder = await repository.key_holder(conn, idempotency_key)
    if holder is None or holder["kind"] != table.kind:
        raise Conflict(idempotency.REUSED_KEY_MESSAGE)
    row = await repository.run_row(conn, table, holder["run_id"], returning)
    if row is None:
        raise Conflict(idempotency.REUSED_KEY_MESSAGE)
    if holder["request_hash"] is None:  # back-filled by migration 009: its stored columns
        idempotency.replay(
            False, {key: row[key] for key in compared}, {key: values[key] for key in compared}
        )
    elif holder["request_hash"] != request_hash:
        raise Conflict(idempotency.REUSED_KEY_MESSAGE)
    return row, False
