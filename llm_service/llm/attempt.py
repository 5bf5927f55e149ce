"""The attempts of one call: tenacity retries within the deadline, each attempt reserved, sent
and settled on its own ledger row."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NoReturn

from tenacity import AsyncRetrying, retry_if_exception

from budgets.ceiling import Reservation, RunCeiling
from budgets.ledger import CallReservation
from budgets.usage import missing_usage
from llm_service.llm import retry
from llm_service.llm.call_plan import Answered, Billed, CallPlan, LlmRequest, ProviderUnavailable
from llm_service.llm.ledger_steps import LedgerSteps, metric_model
from llm_service.llm.send_gate import GateClosed, SendGate
from llm_service.llm.usage_read import ProviderUsage, breakdown_json
from llm_service.metrics import USAGE_ANOMALIES
from llm_service.settings import Settings

_log = logging.getLogger(__name__)


async def with_retries(plan: CallPlan, settings: Settings, ledger: LedgerSteps) -> Answered:
    """Attempts until one is answered, the error is not transient, or the deadline/attempts end.

    A transient failure past the last attempt becomes ProviderUnavailable.
    """
    retrying = AsyncRetrying(
        retry=retry_if_exception(retry.is_transient),
        wait=retry.ProviderBackoff(),
        stop=retry.StopAtDeadlineOrAttempts(settings.llm_max_attempts, plan.deadline),
        reraise=True,
    )
    attempt_no = 0
    try:
        async for attempt in retrying:
            with attempt:
                attempt_no += 1
                return await attempt_once(plan, attempt_no, settings, ledger)
    except BaseException as exc:
        if retry.is_transient(exc) and not isinstance(exc, TimeoutError):
            raise ProviderUnavailable(
                f"the model provider failed after {attempt_no} attempt(s): {type(exc).__name__}"
            ) from exc
        raise
    raise AssertionError("unreachable")  # pragma: no cover


async def attempt_once(
    plan: CallPlan, attempt_no: int, settings: Settings, ledger: LedgerSteps
) -> Answered:
    """Reserve, send and settle one attempt."""
    request, ceiling = plan.request, plan.ceiling
    timeout = _time_left(plan, settings.llm_request_timeout_s)
    if timeout is None:
        raise TimeoutError("no time left for another provider call")
    held = ceiling.reserve(
        plan.price,
        plan.input_tokens,
        plan.max_tokens,
        min_output_tokens=min(request.min_output_tokens, plan.max_tokens),
        for_wrapup=request.for_wrapup,
        cache_writes=plan.cache_writes,
    )
    # litellm builds the request while the reserve's round trip is in flight; the request
    # itself waits at the HTTP send until the reservation is committed (send_gate).
    gate = SendGate()
    sending = asyncio.create_task(gate.run(plan.invoke, held.max_tokens, timeout))
    sending.add_done_callback(_retrieved)
    try:
        call = await ledger.open_call(plan, held, timeout, attempt_no)
    except BaseException:
        gate.close()  # refused or cut off: the request stops at the gate, nothing is sent
        ceiling.release(held)
        # Not cancelled: litellm ends on the closed gate, so no work of this attempt outlives it.
        await asyncio.wait([sending])
        raise
    # The reserve may have waited (a lock): the send gets only what is left of the deadline.
    left = _time_left(plan, timeout)
    if left is None:
        await _withdraw(plan, ledger, call, held, gate, sending)
    timeout = left
    gate.open()
    started = time.perf_counter()  # the provider's latency: from the moment it may be sent
    try:
        async with asyncio.timeout(timeout):
            response, usage = await sending
    except BaseException as exc:
        latency = int((time.perf_counter() - started) * 1000)
        await asyncio.shield(ledger.settle_failure(request, call, ceiling, held, exc, latency))
        raise
    latency = int((time.perf_counter() - started) * 1000)
    billed = bill(settings, request, call, ceiling, held, usage)
    # Shielded like the failure path: a cancellation now must not leave the row pending.
    await asyncio.shield(
        ledger.settle(
            request,
            call,
            "succeeded",
            billed.cost,
            billed.input_tokens,
            billed.output_tokens,
            billed.estimate,
            latency,
            response,
            anomaly=billed.anomaly,
            raw_usage=None if usage is None else usage.raw,
            usage_breakdown=breakdown_json(billed.kinds),
        )
    )
    return Answered(response, call, attempt_no, latency, billed)


def _time_left(plan: CallPlan, timeout: float) -> float | None:
    """`timeout`, cut to what is left of the plan's deadline; None when too little is left."""
    if plan.deadline is None:
        return timeout
    left = min(timeout, plan.deadline - time.monotonic())
    return left if left > 0.05 else None


class DeadlinePassedUnsent(TimeoutError):
    """The caller's deadline passed while the reserve waited: the request was never sent."""


async def _withdraw(
    plan: CallPlan,
    ledger: LedgerSteps,
    call: CallReservation,
    held: Reservation,
    gate: SendGate,
    sending: asyncio.Task[Any],
) -> NoReturn:
    """Keep a committed reservation's request unsent (the deadline passed while reserving):
    the gate closes, the row settles at zero as timed out (nothing sent), TimeoutError."""
    gate.close()
    await asyncio.wait([sending])
    exc = DeadlinePassedUnsent("the deadline passed while the call was reserved")
    exc.__cause__ = GateClosed("the request was held at the gate and never sent")
    await asyncio.shield(ledger.settle_failure(plan.request, call, plan.ceiling, held, exc, 0))
    raise exc


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a sending task's outcome as seen (when the reserve's error is the one raised)."""
    if not task.cancelled():
        task.exception()


def bill(
    settings: Settings,
    request: LlmRequest,
    call: CallReservation,
    ceiling: RunCeiling,
    held: Reservation,
    usage: ProviderUsage | None,
) -> Billed:
    """Judge the reported usage and settle the run's ceiling; never raises (a call that was
    answered must be settled, whatever its usage says)."""
    if usage is not None:
        judged = ceiling.settle_reported(
            held, usage.input_tokens, usage.output_tokens, usage.details
        )
        if judged.anomaly is None:
            if judged.unpriced_kinds:
                _log.warning(
                    "tokens of a kind without a price billed at the dearest known rate",
                    extra={"call_id": str(call.call_id), "kinds": judged.unpriced_kinds},
                )
            return Billed(
                judged.cost_usd,
                judged.input_tokens,
                judged.output_tokens,
                False,
                None,
                judged.kinds,
            )
        anomaly = judged.anomaly
        cost = judged.cost_usd
    else:
        anomaly = missing_usage()
        cost = ceiling.settle_unknown(held)
    USAGE_ANOMALIES.labels(metric_model(settings, request.endpoint), request.endpoint).inc()
    _log.warning(
        "provider usage not believed; billed at the reservation",
        extra={
            "call_id": str(call.call_id),
            "endpoint": request.endpoint,
            "anomaly": anomaly,
            "reserved_usd": str(held.amount_usd),
        },
    )
    # Tokens unknown: the reported ones are not believed (they are kept in raw_usage).
    return Billed(cost, None, None, True, anomaly)
