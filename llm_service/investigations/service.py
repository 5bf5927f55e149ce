"""Investigation rules for the API: create (idempotently), read, list, cancel, stream progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from budgets.money import cents_to_usd, plain_usd, usd_to_cents
from llm_service.db.pool import tenant_transaction
from llm_service.errors import InvalidRequest, NotFound
from llm_service.investigations import repository
from llm_service.investigations.schemas import (
    MAX_COST_USD,
    MAX_STEPS,
    MAX_TIMEOUT_S,
    InvestigationCreate,
    InvestigationLimits,
    InvestigationOut,
    InvestigationPage,
    LlmCallOut,
    ToolCallOut,
)
from llm_service.jobs import service as queueing
from llm_service.settings import Settings

STATUSES = frozenset({"queued", "running"}) | repository.TERMINAL_STATES
DEFAULT_MAX_STEPS = 12


async def create(
    pool: asyncpg.Pool,
    settings: Settings,
    tenant_id: UUID,
    body: InvestigationCreate,
    idempotency_key: str | None,
) -> tuple[InvestigationOut, bool]:
    """Queue a run (the queue is the table); a reused Idempotency-Key returns the same run, or
    409 when the request differs (`llm_service.idempotency`)."""
    queueing.check_key(idempotency_key)
    # The ceilings are the service's within the hard ones ($0.30, 60 s), whatever is configured.
    ceilings = limits(settings)
    ceiling_usd = Decimal(ceilings.max_cost_usd)
    max_cost = min(body.max_cost_usd or ceiling_usd, ceiling_usd)
    timeout_s = min(body.timeout_s or ceilings.timeout_s, ceilings.timeout_s)
    question = body.question  # trimmed by its schema
    max_cost_cents = usd_to_cents(max_cost)
    timeout_ms = max(1, int(timeout_s * 1000))
    max_steps = body.max_steps or DEFAULT_MAX_STEPS
    # The run as the row stores it (a key back-filled by migration 009 is compared on these).
    stored = {
        "question": question,
        "max_cost_cents": max_cost_cents,
        "timeout_ms": timeout_ms,
        "max_steps": max_steps,
    }
    async with tenant_transaction(pool, tenant_id) as conn:
        row, created = await queueing.queue(
            conn,
            repository.TABLE,
            {"tenant_id": tenant_id, **stored},
            idempotency_key,
            request=request_of(body, ceilings),
            returning=repository.COLUMNS,
            compared=stored,
        )
        if created:
            await repository.add_event(
                conn,
                tenant_id,
                row["id"],
                "queued",
                {
                    "question": row["question"],
                    "max_cost_usd": plain_usd(max_cost),
                    "timeout_s": timeout_s,
                },
            )
    return to_out(row), created


def request_of(body: InvestigationCreate, ceilings: InvestigationLimits) -> dict[str, Any]:
    """What a retry with the same Idempotency-Key must repeat: the validated request as given,
    a field left out as its default (spelling the default out is the same request, as for every
    job kind), and a timeout of 30.0009 s is not 30 s, though both are stored as 30000 ms."""
    return {
        "question": body.question,
        "max_cost_usd": Decimal(ceilings.max_cost_usd)
        if body.max_cost_usd is None
        else body.max_cost_usd,
        "timeout_s": ceilings.timeout_s if body.timeout_s is None else body.timeout_s,
        "max_steps": DEFAULT_MAX_STEPS if body.max_steps is None else body.max_steps,
    }


def limits(settings: Settings) -> InvestigationLimits:
    """The ceilings a request may ask up to: the service's, within what the API accepts."""
    max_cost = min(settings.investigation_max_cost_usd, MAX_COST_USD)
    return InvestigationLimits(
        max_cost_usd=format(max_cost.normalize(), "f"),
        timeout_s=min(settings.investigation_timeout_s, MAX_TIMEOUT_S),
        max_steps=MAX_STEPS,
        default_max_steps=DEFAULT_MAX_STEPS,
    )


async def get(pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> InvestigationOut:
    """One run with its tool calls and LLM calls (404 for another tenant's id)."""
    async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
        row = await repository.get(conn, run_id)
        if row is None:
            raise NotFound("no such investigation")
        tools = await repository.tool_calls(conn, run_id)
        calls = await repository.llm_calls(conn, run_id)
    out = to_out(row)
    out.tool_calls = [
        ToolCallOut(
            id=t["id"],
            step=t["step"],
            tool_name=t["tool_name"],
            arguments=t["input_params"],
            result=t["output"],
            truncated=t["output_truncated"],
            error=t["error"],
            duration_ms=t["duration_ms"],
        )
        for t in tools
    ]
    out.llm_calls = [
        LlmCallOut(
            id=c["id"],
            model=c["model"],
            attempt=c["attempt"],
            status=c["status"],
            input_tokens=c["input_tokens"],
            output_tokens=c["output_tokens"],
            cost_usd=_usd(c["cost_cents"]),
            cost_is_estimate=c["cost_is_estimate"],
            latency_ms=c["latency_ms"],
        )
        for c in calls
    ]
    return out


async def list_page(
    pool: asyncpg.Pool, tenant_id: UUID, *, status: str | None, limit: int, before: datetime | None
) -> InvestigationPage:
    """A page of the tenant's runs."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(sorted(STATUSES))}")
    if before is not None:
        before = _utc(before, "before")
    async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
        rows = await repository.list_runs(conn, status=status, limit=limit + 1, before=before)
    items = [to_out(r) for r in rows[:limit]]
    return InvestigationPage(
        items=items, next_before=items[-1].created_at if len(rows) > limit else None
    )


async def cancel(pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> InvestigationOut:
    """Cancel a run: at once if queued; a running one stops at its next heartbeat."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repository.get(conn, run_id)
        if row is None:
            raise NotFound("no such investigation")
        if row["status"] in ("queued", "running"):
            cancelled = await repository.request_cancel(conn, run_id)
            if cancelled is None:  # it ended meanwhile (a terminal run is left as it is)
                return to_out(await repository.get(conn, run_id) or row)
            row = cancelled
            if row["status"] == "cancelled":
                await repository.add_event(
                    conn,
                    tenant_id,
                    run_id,
                    "final",
                    {
                        "status": "cancelled",
                        "reason": row["reason"],
                        "cost_usd": "0",
                        "elapsed_s": 0,
                        "degraded": False,
                        "findings": 0,
                    },
                )
    return to_out(row)


async def stream_events(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    run_id: UUID,
    *,
    after_seq: int = 0,
    poll_s: float = 0.2,
    max_wait_s: float = 180.0,
) -> AsyncIterator[dict[str, Any]]:
    """The run's events from `after_seq` on (history first), ending after the final event.

    A run that had ended when the stream opened ends it as soon as the history is sent: a
    client resuming after the final event (an EventSource reconnects by itself) is not held.
    """
    async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
        run = await repository.get(conn, run_id)
    if run is None:
        raise NotFound("no such investigation")
    ended = run["status"] in repository.TERMINAL_STATES
    loop = asyncio.get_running_loop()
    give_up = loop.time() + max_wait_s
    while loop.time() < give_up:
        async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
            events = await repository.events_after(conn, run_id, after_seq)
        for event in events:
            after_seq = event["seq"]
            yield event
            if event["event_type"] == "final":
                return
        if not events:
            if ended:
                return
            await asyncio.sleep(poll_s)


def to_out(row: dict[str, Any]) -> InvestigationOut:
    """The API form of a run row."""
    result = row.get("result") or {}
    return InvestigationOut(
        id=row["id"],
        status=row["status"],
        reason=row["reason"],
        degraded=row["degraded"],
        cancel_requested=bool(row.get("cancel_requested")),
        question=row["question"],
        cost_usd=_usd(row["cost_cents"]),
        max_cost_usd=_usd(row["max_cost_cents"]),
        elapsed_s=row["elapsed_ms"] / 1000 if row["elapsed_ms"] is not None else None,
        timeout_s=row["timeout_ms"] / 1000,
        max_steps=row["max_steps"],
        summary=result.get("summary"),
        findings=result.get("findings", []),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _utc(moment: datetime, name: str) -> datetime:
    """`moment` in UTC (naive means UTC); 422 when UTC cannot represent it (year 1 or 9999)."""
    try:
        return moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"{name} is out of range") from None


def _usd(cents: Decimal) -> str:
    return plain_usd(cents_to_usd(cents))
