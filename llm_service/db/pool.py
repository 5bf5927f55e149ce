"""asyncpg pools and the one way to run tenant work: a transaction that sets the tenant first."""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
from pgvector.asyncpg import register_vector

from llm_service.db import queries

Connection = asyncpg.Connection
Pool = asyncpg.Pool

# The lease token of the claimed run the current task works for: every tenant transaction the
# task (and the tasks it starts) opens presents it, so the run's writes pass migration 010's
# guards. Set for the length of a run by its job kind (`presenting_run_token`); unset elsewhere.
_RUN_TOKEN: contextvars.ContextVar[UUID | None] = contextvars.ContextVar(
    "llm_run_token", default=None
)


@contextlib.contextmanager
def presenting_run_token(token: UUID) -> Iterator[None]:
    """Within the block (and tasks started in it), tenant transactions present `token`."""
    reset = _RUN_TOKEN.set(token)
    try:
        yield
    finally:
        _RUN_TOKEN.reset(reset)


def presented_run_token() -> UUID | None:
    """The lease token the current task presents (`presenting_run_token`), or None."""
    return _RUN_TOKEN.get()


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)  # exact; never through float
    if isinstance(value, UUID | datetime | date):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode_json(value: object) -> str:
    """JSON for the database: Decimals, UUIDs and dates as strings, never rounded through float."""
    return json.dumps(value, default=_json_default)


def decode_json(text: str) -> Any:
    """JSON from the database: numbers with a fraction become exact Decimals."""
    return json.loads(text, parse_float=Decimal)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("jsonb", "json"):
        await conn.set_type_codec(
            name, encoder=encode_json, decoder=decode_json, schema="pg_catalog"
        )
    # Before migrations the vector extension does not exist yet.
    with contextlib.suppress(ValueError):
        await register_vector(conn)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (it still rolls back an open transaction)."""


async def create_pool(
    url: str,
    *,
    application_name: str,
    min_size: int = 1,
    max_size: int = 10,
    statement_timeout_ms: int = 15_000,
) -> asyncpg.Pool:
    """A pool whose connections decode JSON, know pgvector and name their process.

    Connections go back without a reset query (`RESET ALL`, `pg_advisory_unlock_all()`, ...),
    a round trip saved per checkout: nothing here leaves session state behind. Tenant context,
    tool timeouts and advisory locks are all transaction-scoped.
    """
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        server_settings={
            "application_name": application_name,
            "statement_timeout": str(statement_timeout_ms),
            "timezone": "UTC",
            # Pinned, whatever a role setting says: the ledger's cap check relies on it.
            "default_transaction_isolation": "read committed",
        },
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def tenant_transaction(
    pool: asyncpg.Pool,
    tenant_id: UUID | str,
    *,
    readonly: bool = False,
) -> AsyncIterator[asyncpg.Connection]:
    """Own one transaction for a tenant: set the tenant (and the lease token the task presents,
    `presenting_run_token`), commit on success, roll back on error."""
    token = None if readonly else _RUN_TOKEN.get()
    async with pool.acquire() as conn, conn.transaction(readonly=readonly):
        await queries.set_tenant(conn, tenant_id, token)
        yield conn


@asynccontextmanager
async def key_transaction(
    pool: asyncpg.Pool, api_key_hash: str, *, readonly: bool = False
) -> AsyncIterator[tuple[asyncpg.Connection, UUID | None]]:
    """Own one transaction for the tenant of an API key's hash, resolved and set by the database.

    Yields the connection and the tenant (None for an unknown or revoked key: then no tenant is
    set and every tenant table reads empty). Authentication and the tenant cost one statement.
    """
    async with pool.acquire() as conn, conn.transaction(readonly=readonly):
        tenant = await queries.set_tenant_from_key(conn, api_key_hash)
        yield conn, UUID(tenant) if tenant else None


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A transaction with no tenant set: tenant tables read empty in it (fail closed)."""
    async with pool.acquire() as conn, conn.transaction():
        yield conn


def record_to_dict(record: asyncpg.Record | None) -> dict[str, Any] | None:
    """A plain dict of a row, or None."""
    return dict(record) if record is not None else None
