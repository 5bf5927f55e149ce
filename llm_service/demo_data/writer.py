"""Writing the data set: set-based INSERT ... SELECT FROM unnest per table and chunk."""

from __future__ import annotations

import asyncio
import time as clock
from datetime import UTC, date, datetime
from uuid import UUID

import asyncpg

from llm_service.demo_data import queries
from llm_service.demo_data.builder import (
    _Builder,
)
from llm_service.demo_data.channels import (
    _check_target,
    _load_channels,
)
from llm_service.demo_data.planner import (
    CHUNK_EVENTS,
    MAX_EVENTS,
    MIN_EVENTS,
    _Context,
    _context,
    _plan,
)
from llm_service.demo_data.rows import (
    _DEAD_EVENTS,
    _RUNS,
    _Batch,
    _batch,
    _Chunk,
)
from llm_service.demo_data.summary import (
    DemoDataSummary,
)
from llm_service.errors import InvalidRequest


async def generate_demo_data(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    events: int = 20_000,
    seed: int = 7,
    today: date | None = None,
) -> DemoDataSummary:
    """Write 90 days of synthetic attribution data for the tenant set on `conn`'s transaction."""
    started = clock.perf_counter()
    if not MIN_EVENTS <= events <= MAX_EVENTS:
        raise InvalidRequest(f"events must be between {MIN_EVENTS} and {MAX_EVENTS}")
    if seed < 0:
        raise InvalidRequest("seed must be >= 0")
    await _check_target(conn, tenant_id, seed)
    ctx = _context(tenant_id, seed, today or datetime.now(UTC).date(), await _load_channels(conn))
    builder = _Builder(ctx, _plan(ctx, events))
    await _insert(conn, _batch(_RUNS, builder.run_rows()))
    await _write_chunks(conn, builder, events)
    await _insert(conn, _batch(_DEAD_EVENTS, builder.dead_event_rows()))
    transitions = await _apply_state_changes(conn, ctx, builder.state_changes)
    await _settle_runs(conn, ctx)
    return builder.summary(transitions, clock.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


async def _insert(conn: asyncpg.Connection, batch: _Batch) -> None:
    if batch.rows:
        await conn.execute(batch.table.insert_sql, *batch.values)


async def _insert_chunk(conn: asyncpg.Connection, chunk: _Chunk) -> None:
    """One chunk, parents first; all of a chunk's allocations in one statement (sum trigger)."""
    for batch in (chunk.events, chunk.allocations, chunk.ledger, chunk.corrections):
        await conn.execute(queries.DISCARD_PLANS)  # replan the foreign-key checks per batch
        await _insert(conn, batch)


async def _write_chunks(conn: asyncpg.Connection, builder: _Builder, events: int) -> None:
    """Build chunk k+1 in a thread while the server ingests chunk k."""
    parts = [slice(s, min(s + CHUNK_EVENTS, events)) for s in range(0, events, CHUNK_EVENTS)]
    pending = asyncio.ensure_future(asyncio.to_thread(builder.chunk, 0, parts[0]))
    try:
        for number in range(len(parts)):
            chunk = await pending
            if number + 1 < len(parts):
                following = asyncio.to_thread(builder.chunk, number + 1, parts[number + 1])
                pending = asyncio.ensure_future(following)
            await _insert_chunk(conn, chunk)
    finally:
        if not pending.done():
            pending.cancel()


async def _apply_state_changes(
    conn: asyncpg.Connection, ctx: _Context, changes: list[tuple[str, str, str, str]]
) -> int:
    """Refund and charge back in one UPDATE; the ledger's trigger audits each change."""
    if not changes:
        return 0
    ids, states, reasons, times = (list(column) for column in zip(*changes, strict=True))
    status = await conn.execute(
        queries.UPDATE_LEDGER_STATES,
        ids,
        states,
        reasons,
        times,
        ctx.tenant_id,
    )
    await conn.execute(
        queries.RESTAMP_TRANSITIONS,
        ids,
        times,
        ctx.tenant_id,
    )
    return int(status.split()[-1])


async def _settle_runs(conn: asyncpg.Connection, ctx: _Context) -> None:
    """Record what each completed reconciliation checked."""
    await conn.execute(
        queries.SETTLE_RUNS,
        ctx.tenant_id,
        [run.id for run in ctx.runs],
    )
