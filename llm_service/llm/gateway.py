"""The LLM gateway: every provider call is redacted, priced, reserved, recorded, retried, settled.

For each attempt: reserve the worst case in the run's ceiling and (atomically, in PostgreSQL) under
the tenant's monthly cap, writing a pending ledger row; call litellm with an explicit
`max_tokens`, `timeout` and `max_retries=0`; settle the row from the usage the provider returns.
Retries (tenacity, here only) never pass the caller's deadline, and each is its own ledger row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception

from budgets.ceiling import Reservation, RunCeiling
from budgets.ledger import CallReservation
from budgets.prices import ModelPrice, PriceBook
from budgets.usage import KindCost, UsageDetails, missing_usage
from llm_service.costs.ledger_repository import reserve_call, settle_call, void_reservation
from llm_service.db.pool import tenant_transaction
from llm_service.db.retry import is_database_outage, retry_through_outage
from llm_service.errors import ServiceError
from llm_service.input_rules import storable
from llm_service.llm import retry
from llm_service.llm.litellm_setup import load_litellm
from llm_service.llm.prompt_cache import mark_stable_prefix
from llm_service.llm.usage_read import ProviderUsage, breakdown_json, completion_usage, raw_usage
from llm_service.metrics import LLM_CALLS, LLM_SPEND, RESERVATIONS_IN_FLIGHT, USAGE_ANOMALIES
from llm_service.pii.redact import PiiFinding, redact_messages
from llm_service.pii.repository import record_findings
from llm_service.settings import Settings

_log = logging.getLogger(__name__)

# A pending row outlives its call by this much before a sweeper may count it as abandoned.
LEASE_GRACE_S = 30.0
_PROMPT_STORE_LIMIT = 32_000


class ProviderUnavailable(ServiceError):
    """The provider failed after every attempt the deadline and budget allowed."""

    status = 503
    code = "provider_unavailable"


class NoModelConfigured(ServiceError):
    """LLM_MODEL is not set: callers fall back to their degraded, deterministic answer."""

    status = 503
    code = "no_model_configured"


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model asked for."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class LlmRequest:
    """One chat completion a caller wants, with what it belongs to."""

    tenant_id: UUID
    endpoint: str
    messages: list[dict[str, Any]]
    max_tokens: int
    tools: list[dict[str, Any]] | None = None
    investigation_id: UUID | None = None
    budget_optimization_job_id: UUID | None = None
    for_wrapup: bool = False
    min_output_tokens: int = 64
    response_format: dict[str, Any] | None = None  # native structured output (JSON schema)


@dataclass(frozen=True)
class LlmResult:
    """What the model said, and what it cost."""

    content: str | None
    tool_calls: list[ToolCall]
    finish_reason: str | None
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    call_id: UUID
    attempts: int
    latency_ms: int
    pii_findings: list[PiiFinding] = field(default_factory=list)


@dataclass(frozen=True)
class _Billed:
    """How an answered call was settled."""

    cost: Decimal
    input_tokens: int | None
    output_tokens: int | None
    estimate: bool
    anomaly: str | None
    kinds: tuple[KindCost, ...] = ()


class LlmGateway:
    """The only caller of litellm in the service."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, prices: PriceBook) -> None:
        """A gateway for the configured model, recording into `pool` (the application role)."""
        self.settings = settings
        self.pool = pool
        self.prices = prices
        self._litellm = load_litellm()

    @property
    def model(self) -> str | None:
        """The configured chat model, or None (degraded mode)."""
        return self.settings.llm_model

    def price(self, model: str | None = None) -> ModelPrice:
        """The pinned price of a model (the configured one by default)."""
        name = model or self.model
        if not name:
            raise NoModelConfigured("no LLM model is configured (LLM_MODEL)")
        return self.prices.price_for(name)

    def count_tokens(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> int:
        """Input tokens of a prompt as litellm counts them for the configured model."""
        count: int = self._litellm.token_counter(model=self.model, messages=messages, tools=tools)
        return count

    async def complete(
        self,
        request: LlmRequest,
        *,
        ceiling: RunCeiling | None = None,
        deadline: float | None = None,
    ) -> LlmResult:
        """One chat completion within `ceiling` (a one-call ceiling if None) and `deadline`.

        `deadline` is a `time.monotonic()` instant. Raises CeilingReached, MonthlyCapExceeded,
        ProviderUnavailable, TimeoutError or the provider's non-transient error.
        """
        model = self.model
        if not model:
            raise NoModelConfigured("no LLM model is configured (LLM_MODEL)")
        price = self.price(model)
        redacted, findings = redact_messages(request.messages)
        input_tokens = self.count_tokens(redacted, request.tools)
        if request.response_format:  # the schema is part of the prompt the provider bills
            input_tokens += int(
                self._litellm.token_counter(model=model, text=json.dumps(request.response_format))
            )
        ceiling = ceiling or RunCeiling(self.settings.llm_call_max_cost_usd)
        provider = self._provider(model)
        # The stable prefix marked for providers that cache only where asked (prompt_cache).
        # A breakpoint only where the price says what a cache write costs (else the write's
        # real rate could pass what was reserved).
        sent, cache_writes = (
            mark_stable_prefix(redacted, provider)
            if price.kind_rate("cache_write", 0) is not None
            else (redacted, False)
        )
        extra: dict[str, Any] = {}
        if request.tools:
            extra["tools"] = request.tools
        if request.response_format:
            extra["response_format"] = request.response_format
        if self.settings.llm_api_base:
            extra["api_base"] = self.settings.llm_api_base

        async def invoke(max_tokens: int, timeout: float) -> tuple[Any, ProviderUsage | None]:
            response = await self._litellm.acompletion(
                model=model,
                messages=sent,
                max_tokens=max_tokens,
                timeout=timeout,
                max_retries=0,
                num_retries=0,
                **extra,
            )
            return response, completion_usage(response)

        response, call, attempts, latency_ms, billed, cost = await self._with_retries(
            request=request,
            price=price,
            provider=provider,
            ceiling=ceiling,
            deadline=deadline,
            input_tokens=input_tokens,
            max_tokens=request.max_tokens,
            findings=findings,
            prompt={"messages": redacted},
            invoke=invoke,
            cache_writes=cache_writes,
        )
        if not response.choices:
            # Settled (and billed) as answered, but there is nothing to return.
            raise ProviderUnavailable("the model provider answered without any choice")
        choice = response.choices[0]
        message = choice.message
        # What the model wrote is untrusted text that will be stored: no NUL gets through.
        tool_calls = [
            ToolCall(
                id=storable(tc.id),
                name=storable(tc.function.name),
                arguments=storable(tc.function.arguments or "{}"),
            )
            for tc in (getattr(message, "tool_calls", None) or [])
        ]
        content = getattr(message, "content", None)
        return LlmResult(
            content=storable(content) if isinstance(content, str) else content,
            tool_calls=tool_calls,
            finish_reason=getattr(choice, "finish_reason", None),
            model=model,
            input_tokens=billed.input_tokens or 0,
            output_tokens=billed.output_tokens or 0,
            cost_usd=cost,
            call_id=call.call_id,
            attempts=attempts,
            latency_ms=latency_ms,
            pii_findings=findings,
        )

    async def embed(
        self, tenant_id: UUID, texts: list[str], *, deadline: float | None = None
    ) -> tuple[list[list[float]], Decimal]:
        """Embeddings from the configured provider model, priced and recorded like any call."""
        model = self.settings.embedding_model
        price = self.price(model)
        redacted = [
            redact_messages([{"role": "user", "content": t}])[0][0]["content"] for t in texts
        ]
        input_tokens = sum(int(self._litellm.token_counter(model=model, text=t)) for t in redacted)
        request = LlmRequest(tenant_id=tenant_id, endpoint="embeddings", messages=[], max_tokens=1)

        async def invoke(_: int, timeout: float) -> tuple[Any, ProviderUsage | None]:
            response = await self._litellm.aembedding(
                model=model,
                input=redacted,
                timeout=timeout,
                max_retries=0,
                **({"api_base": self.settings.llm_api_base} if self.settings.llm_api_base else {}),
            )
            usage = getattr(response, "usage", None)
            tokens = getattr(usage, "prompt_tokens", None) if usage else None
            if tokens is None:
                return response, None
            return response, ProviderUsage(tokens, 0, UsageDetails(), raw_usage(usage))

        response, *_, cost = await self._with_retries(
            request=request,
            price=price,
            provider=self._provider(model),
            ceiling=RunCeiling(self.settings.llm_call_max_cost_usd),
            deadline=deadline,
            input_tokens=input_tokens,
            max_tokens=1,
            findings=[],
            prompt=None,
            invoke=invoke,
        )
        return [list(item["embedding"]) for item in response.data], cost

    # -- attempts --------------------------------------------------------------------------

    async def _with_retries(
        self,
        *,
        request: LlmRequest,
        price: ModelPrice,
        provider: str,
        ceiling: RunCeiling,
        deadline: float | None,
        input_tokens: int,
        max_tokens: int,
        findings: list[PiiFinding],
        prompt: dict[str, Any] | None,
        invoke: Callable[[int, float], Awaitable[tuple[Any, ProviderUsage | None]]],
        cache_writes: bool = False,
    ) -> tuple[Any, CallReservation, int, int, _Billed, Decimal]:
        retrying = AsyncRetrying(
            retry=retry_if_exception(retry.is_transient),
            wait=retry.ProviderBackoff(),
            stop=retry.StopAtDeadlineOrAttempts(self.settings.llm_max_attempts, deadline),
            reraise=True,
        )
        attempt_no = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempt_no += 1
                    return await self._attempt(
                        request=request,
                        price=price,
                        provider=provider,
                        ceiling=ceiling,
                        deadline=deadline,
                        input_tokens=input_tokens,
                        max_tokens=max_tokens,
                        findings=findings if attempt_no == 1 else [],
                        prompt=prompt,
                        attempt_no=attempt_no,
                        invoke=invoke,
                        cache_writes=cache_writes,
                    )
        except BaseException as exc:
            if retry.is_transient(exc) and not isinstance(exc, TimeoutError):
                raise ProviderUnavailable(
                    f"the model provider failed after {attempt_no} attempt(s): {type(exc).__name__}"
                ) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self,
        *,
        request: LlmRequest,
        price: ModelPrice,
        provider: str,
        ceiling: RunCeiling,
        deadline: float | None,
        input_tokens: int,
        max_tokens: int,
        findings: list[PiiFinding],
        prompt: dict[str, Any] | None,
        attempt_no: int,
        invoke: Callable[[int, float], Awaitable[tuple[Any, ProviderUsage | None]]],
        cache_writes: bool = False,
    ) -> tuple[Any, CallReservation, int, int, _Billed, Decimal]:
        timeout = self.settings.llm_request_timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0.05:
                raise TimeoutError("no time left for another provider call")
        held = ceiling.reserve(
            price,
            input_tokens,
            max_tokens,
            min_output_tokens=min(request.min_output_tokens, max_tokens),
            for_wrapup=request.for_wrapup,
            cache_writes=cache_writes,
        )
        try:
            call = await self._open_call(
                request, price, provider, held, timeout, attempt_no, findings, prompt
            )
        except BaseException:
            ceiling.release(held)
            raise
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                response, usage = await invoke(held.max_tokens, timeout)
        except BaseException as exc:
            latency = int((time.perf_counter() - started) * 1000)
            await asyncio.shield(self._settle_failure(request, call, ceiling, held, exc, latency))
            raise
        latency = int((time.perf_counter() - started) * 1000)
        billed = self._bill(request, call, ceiling, held, usage)
        # Shielded like the failure path: a cancellation now must not leave the row pending.
        await asyncio.shield(
            self._settle(
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
        return response, call, attempt_no, latency, billed, billed.cost

    def _bill(
        self,
        request: LlmRequest,
        call: CallReservation,
        ceiling: RunCeiling,
        held: Reservation,
        usage: ProviderUsage | None,
    ) -> _Billed:
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
                return _Billed(
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
        model = self.model if request.endpoint != "embeddings" else self.settings.embedding_model
        USAGE_ANOMALIES.labels(str(model), request.endpoint).inc()
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
        return _Billed(cost, None, None, True, anomaly)

    async def _open_call(
        self,
        request: LlmRequest,
        price: ModelPrice,
        provider: str,
        held: Reservation,
        timeout: float,
        attempt_no: int,
        findings: list[PiiFinding],
        prompt: dict[str, Any] | None,
    ) -> CallReservation:
        metadata: dict[str, Any] = {"input_tokens_estimate": held.input_tokens_estimate}
        if prompt is not None:
            metadata["prompt"] = _capped(prompt)
        call_id = uuid.uuid4()
        try:
            async with tenant_transaction(self.pool, request.tenant_id) as conn:
                call = await reserve_call(
                    conn,
                    tenant_id=request.tenant_id,
                    endpoint=request.endpoint,
                    model=price.model,
                    provider=provider,
                    worst_case_usd=held.amount_usd,
                    lease_seconds=timeout + LEASE_GRACE_S,
                    max_tokens=held.max_tokens,
                    attempt=attempt_no,
                    investigation_id=request.investigation_id,
                    budget_optimization_job_id=request.budget_optimization_job_id,
                    request_metadata=metadata,
                    call_id=call_id,
                )
                if findings:
                    await record_findings(
                        conn,
                        request.tenant_id,
                        findings,
                        source="llm_guard",
                        context=request.endpoint,
                    )
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) or is_database_outage(exc):
                # The reserving transaction may have committed before it was cut off; the call
                # is not made, so its row (if any) must not be counted at its worst case.
                await asyncio.shield(self._void(request.tenant_id, call_id))
            raise
        RESERVATIONS_IN_FLIGHT.inc()
        return call

    async def _void(self, tenant_id: UUID, call_id: uuid.UUID) -> None:
        """Settle at zero a reservation whose transaction's outcome is unknown (best effort: if
        this fails too, the sweeper counts the row at its worst case once it expires)."""

        async def void() -> None:
            async with tenant_transaction(self.pool, tenant_id) as conn:
                await void_reservation(
                    conn, call_id, "the reservation was cut off before the call; not sent"
                )

        with contextlib.suppress(Exception):
            await retry_through_outage(void, within_s=LEASE_GRACE_S, what="void reservation")

    async def _settle_failure(
        self,
        request: LlmRequest,
        call: CallReservation,
        ceiling: RunCeiling,
        held: Reservation,
        exc: BaseException,
        latency_ms: int,
    ) -> None:
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
        await self._settle(
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

    async def _settle(
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

        async def settle() -> None:
            async with tenant_transaction(self.pool, request.tenant_id) as conn:
                await settle_call(
                    conn,
                    call,
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
        model = (
            self.settings.embedding_model if request.endpoint == "embeddings" else str(self.model)
        )
        LLM_CALLS.labels(model, request.endpoint, status).inc()
        LLM_SPEND.labels(model, request.endpoint).inc(float(cost))

    def _provider(self, model: str) -> str:
        try:
            provider: str = self._litellm.get_llm_provider(model)[1]
        except Exception:
            provider = model.split("/", 1)[0] if "/" in model else "unknown"
        return provider


def _capped(prompt: dict[str, Any]) -> dict[str, Any]:
    from llm_service.db.pool import encode_json

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
