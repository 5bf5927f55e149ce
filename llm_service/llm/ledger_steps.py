"""The ledger steps of an attempt: reserve its worst case (a pending row), settle it after.

The reserve and the settle are each ONE statement in its own implicit transaction on the
application pool (it sets the tenant and the run's lease token itself: ledger_repository); the
settle is retried through a database outage for as long as the reservation's grace allows and is
idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from budgets.ceiling import Reservation, RunCeiling
from budgets.ledger import CallReservation
from llm_service.costs.ledger_repository import (
    reserve_call_alone,
    settle_call_alone,
    void_reservation,
)
from llm_service.db.pool import encode_json, presented_run_token, tenant_transaction
from llm_service.db.retry import is_database_outage, retry_through_outage
from llm_service.input_rules import storable
from llm_service.llm import retry
from llm_service.llm.call_plan import CallPlan, LlmRequest
from llm_service.metrics import LLM_CALLS, LLM_SPEND, RESERVATIONS_IN_FLIGHT
from llm_service.settings import Settings

_log = logging.getLogger(__name__)

# A pending row outlives its call by this much before a sweeper may count it as abandoned.
LEASE_GRACE_S = 30.0
_PROMPT_STORE_LIMIT = 32_000


def metric_model(settings: Settings, endpoint: str) -> str:
    """The model a call of `endpoint` is counted under in the metrics."""
    return settings.embedding_model if endpoint == "embeddings" else str(settings.llm_model)


class LedgerSteps:
    """Reserve and settle the ledger rows of one gateway's calls."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        """Steps recording into `pool` (the application role)."""
        self.settings = settings
        self.pool = pool

    async def open_call(
        self, plan: CallPlan, held: Reservation, timeout: float, attempt_no: int
    ) -> CallReservation:
        """Write the attempt's pending row (and, on the first attempt, its PII findings)."""
        request, price, prompt = plan.request, plan.price, plan.prompt
        findings = plan.findings if attempt_no == 1 else []
        metadata: dict[str, Any] = {"input_tokens_estimate": held.input_tokens_estimate}
        if prompt is not None:
            metadata["prompt"] = _capped(prompt)
        # Drawn here, not in the ledger, so a reserve cut off in flight can still be voided.
        call_id, settle_token = uuid.uuid4(), uuid.uuid4()
        try:
            async with self.pool.acquire() as conn:
                call = await reserve_call_alone(
                    conn,
                    run_token=presented_run_token(),
                    findings=[(f.location, f.kind) for f in findings],
                    tenant_id=request.tenant_id,
                    endpoint=request.endpoint,
                    model=price.model,
                    provider=plan.provider,
                    worst_case_usd=held.amount_usd,
                    lease_seconds=timeout + LEASE_GRACE_S,
                    max_tokens=held.max_tokens,
                    attempt=attempt_no,
                    investigation_id=request.investigation_id,
                    budget_optimization_job_id=request.budget_optimization_job_id,
                    request_metadata=metadata,
                    call_id=call_id,
                    settle_token=settle_token,
                )
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) or is_database_outage(exc):
                # The reserving transaction may have committed before it was cut off; the call
                # is not made, so its row (if any) must not be counted at its worst case.
                await asyncio.shield(self._void(request.tenant_id, call_id, settle_token))
            raise
        RESERVATIONS_IN_FLIGHT.inc()
        return call

    async def _void(self, tenant_id: UUID, call_id: uuid.UUID, settle_token: uuid.UUID) -> None:
        """Settle at zero a reservation whose transaction's outcome is unknown (best effort: if
        this fails too, the sweeper counts the row at its worst case once it expires)."""

        async def void() -> None:
            async with tenant_transaction(self.pool, tenant_id) as conn:
                await void_reservation(
                    conn,
                    call_id,
                    "the reservation was cut off before the call; not sent",
                    settle_token=settle_token,
                )

        with contextlib.suppress(Exception):
            await retry_through_outage(void, within_s=LEASE_GRACE_S, what="void reservation")

    async def settle_failure(
        self,
        request: LlmRequest,
        call: CallReservation,
        ceiling: RunCeiling,
        held: Reservation,
        exc: BaseException,
        latency_ms: int,
    ) -> None:
        """Settle an attempt that raised: at zero if surely not billed, else at its worst case."""
        if isinstance(exc, asyncio.CancelledError):
            status = "cancelled"
        elif retry.is_timeout(exc):
            status = "timed_out"
        else:
            status = "failed"
        if status != "cancelled" and retry.surely_not_billed(exc):
            ceiling.release(held)
            cost, estimate = Decimal(0), False
        else:
            # Cancelled, timed out, cut off or unreadable: the provider may have billed it.
            cost, estimate = ceiling.settle_unknown(held), True
        await self.settle(
            request,
            call,
            status,
            cost,
            None,
            None,
            estimate,
            latency_ms,
            None,
            error=exc,
            anomaly=_unreadable_reply(exc),
        )

    async def settle(
        self,
        request: LlmRequest,
        call: CallReservation,
        status: str,
        cost: Decimal,
        input_tokens: int | None,
        output_tokens: int | None,
        estimate: bool,
        latency_ms: int,
        response: Any,
        *,
        error: BaseException | None = None,
        anomaly: str | None = None,
        raw_usage: dict[str, Any] | None = None,
        usage_breakdown: dict[str, Any] | None = None,
    ) -> None:
        """Write what the attempt cost onto its row, through an outage, idempotently."""
        provider_id = None if response is None else getattr(response, "id", None)
        # What the provider sent is untrusted text: made storable, capped (a NUL, a surrogate or
        # a non-string there must not keep the money from settling).
        details: dict[str, Any] = {
            "provider_request_id": storable(provider_id)[:200] if provider_id else None,
            "error_type": type(error).__name__ if error else None,
            "error_message": storable(_error_text(error)) if error else None,
            "usage_anomaly": storable(anomaly) if anomaly else None,
            "raw_usage": raw_usage,
            "usage_breakdown": usage_breakdown,
        }

        run_token = presented_run_token()

        async def settle() -> None:
            async with self.pool.acquire() as conn:
                await settle_call_alone(
                    conn,
                    call,
                    run_token=run_token,
                    status=status,
                    cost_usd=cost,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cost_is_estimate=estimate,
                    latency_ms=latency_ms,
                    **details,
                )

        # Until the reservation expires the sweeper leaves it alone; after that it is counted at
        # its worst case anyway, so retrying longer would change nothing (settling is idempotent).
        try:
            try:
                await retry_through_outage(settle, within_s=LEASE_GRACE_S, what="settle llm call")
            except Exception as exc:
                if is_database_outage(exc):
                    raise
                # Something in the details was refused: settle the money alone, once.
                _log.warning(
                    "settling with the provider's details failed; settling the money alone",
                    extra={"call_id": str(call.call_id), "error": type(exc).__name__},
                )
                details = dict.fromkeys(details) | {"usage_anomaly": details["usage_anomaly"]}
                details["error_type"] = type(error).__name__ if error else None
                await retry_through_outage(settle, within_s=LEASE_GRACE_S, what="settle llm call")
        finally:
            RESERVATIONS_IN_FLIGHT.dec()
        model = metric_model(self.settings, request.endpoint)
        LLM_CALLS.labels(model, request.endpoint, status).inc()
        LLM_SPEND.labels(model, request.endpoint).inc(float(cost))


def _capped(prompt: dict[str, Any]) -> dict[str, Any]:

    text = encode_json(prompt)
    if len(text) <= _PROMPT_STORE_LIMIT:
        return prompt
    return {"truncated": True, "head": text[:_PROMPT_STORE_LIMIT]}


def _error_text(exc: BaseException) -> str:
    code = retry.answered_status(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # litellm inlines a traceback into some messages: it is no one's business outside the logs.
    text = text.split(" Traceback (most recent call last)")[0][:300]
    return f"HTTP {code}: {text}" if code else text


def _unreadable_reply(exc: BaseException) -> str | None:
    """The anomaly of a reply that came back but could not be read (litellm refused its body:
    a usage field of the wrong type, say), billed at the reservation like any other."""
    if "Invalid response object" in str(exc):
        return "the provider's reply could not be read: " + _error_text(exc)[:200]
    return None
