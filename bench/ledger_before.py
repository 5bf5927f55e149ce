"""The gateway's ledger steps as they were before issue 15's one-statement ledger (BEGIN, set
the tenant, the statements, COMMIT), its settle waiting for the WAL flush, and its reserve
awaited before litellm starts, to measure before and after in the same run."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

import llm_service.llm.ledger_steps as ledger_steps
from budgets.ledger import CallReservation
from llm_service.costs import ledger_repository
from llm_service.costs.ledger_repository import reserve_call, settle_call
from llm_service.db import queries
from llm_service.llm.send_gate import SendGate
from llm_service.pii.redact import PiiFinding
from llm_service.pii.repository import record_findings

T = TypeVar("T")


async def _reserve_in_transaction(
    conn: asyncpg.Connection,
    *,
    run_token: UUID | None,
    findings: Sequence[tuple[str, str]] = (),
    **call: Any,
) -> CallReservation:
    async with conn.transaction():
        await queries.set_tenant(conn, call["tenant_id"], run_token)
        held = await reserve_call(conn, **call)
        if findings:
            await record_findings(
                conn,
                call["tenant_id"],
                [PiiFinding(kind, location) for location, kind in findings],
                source="llm_guard",
                context=call["endpoint"],
            )
    return held


async def _settle_in_transaction(
    conn: asyncpg.Connection,
    reservation: CallReservation,
    *,
    run_token: UUID | None,
    **settlement: Any,
) -> bool:
    async with conn.transaction():
        await queries.set_tenant(conn, reservation.tenant_id, run_token)
        return await settle_call(conn, reservation, **settlement)


@contextlib.contextmanager
def transactional_ledger() -> Iterator[None]:
    """Within the block, the gateway reserves and settles in transactions (the old path)."""
    saved = ledger_steps.reserve_call_alone, ledger_steps.settle_call_alone
    ledger_steps.reserve_call_alone = _reserve_in_transaction
    ledger_steps.settle_call_alone = _settle_in_transaction
    try:
        yield
    finally:
        ledger_steps.reserve_call_alone, ledger_steps.settle_call_alone = saved


@contextlib.contextmanager
def settle_waiting_for_flush() -> Iterator[None]:
    """Within the block, the one-statement settle waits for its WAL flush before returning."""
    saved = ledger_repository._SETTLE_ALONE_SQL
    ledger_repository._SETTLE_ALONE_SQL = ledger_repository._settle_alone_sql(wait_for_flush=True)
    try:
        yield
    finally:
        ledger_repository._SETTLE_ALONE_SQL = saved


@contextlib.contextmanager
def reserve_before_litellm() -> Iterator[None]:
    """Within the block, litellm starts only once the reservation is committed (the old order:
    reserve, then build and send) instead of building the request while the reserve is in
    flight."""
    real = SendGate.run

    async def run_after_reserve(self: SendGate, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        await self.wait()
        return await real(self, call, *args)

    SendGate.run = run_after_reserve  # type: ignore[method-assign]
    try:
        yield
    finally:
        SendGate.run = real  # type: ignore[method-assign]
