"""The LLM gateway: every provider call is redacted, priced, reserved, recorded, retried, settled.

The rooms: `call_plan` (the request, the result and the plan its attempts share), `attempt`
(retries and one attempt), `ledger_steps` (reserve and settle the rows), `send_gate` (nothing
sent before its reservation commits); this module builds the plan and shapes the answer.

For each attempt: reserve the worst case in the run's ceiling and (atomically, in PostgreSQL) under
the tenant's monthly cap, writing a pending ledger row; call litellm with an explicit
`max_tokens`, `timeout` and `max_retries=0` (it builds the request while the reserve is in flight;
the request waits at the HTTP send until the row is committed: `send_gate`); settle the row from
the usage the provider returns.
Retries (tenacity, here only) never pass the caller's deadline, and each is its own ledger row.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from budgets.ceiling import RunCeiling
from budgets.prices import ModelPrice, PriceBook
from budgets.usage import UsageDetails
from llm_service.input_rules import storable
from llm_service.llm import inline_build
from llm_service.llm.attempt import with_retries
from llm_service.llm.call_plan import (
    CallPlan,
    LlmRequest,
    LlmResult,
    NoModelConfigured,
    ProviderUnavailable,
    ToolCall,
)
from llm_service.llm.ledger_steps import LEASE_GRACE_S, LedgerSteps
from llm_service.llm.litellm_quiet import quiet_call
from llm_service.llm.litellm_setup import load_litellm, use_transport
from llm_service.llm.prompt_cache import mark_stable_prefix
from llm_service.llm.prompt_memo import PromptMemo, count_prompt
from llm_service.llm.usage_read import ProviderUsage, completion_usage, raw_usage
from llm_service.pii.redact import redact_messages
from llm_service.settings import Settings

__all__ = [
    "LEASE_GRACE_S",
    "LlmGateway",
    "LlmRequest",
    "LlmResult",
    "NoModelConfigured",
    "ProviderUnavailable",
    "ToolCall",
]

_log = logging.getLogger(__name__)


class LlmGateway:
    """The only caller of litellm in the service."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, prices: PriceBook) -> None:
        """A gateway for the configured model, recording into `pool` (the application role)."""
        self.settings = settings
        self.pool = pool
        self.prices = prices
        self.ledger = LedgerSteps(settings, pool)
        self._litellm = load_litellm()
        use_transport(settings.llm_http_transport)
        self._providers: dict[str, str] = {}
        self._routes: dict[str, str] = {}

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
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None = None,
    ) -> int:
        """Input tokens of a prompt (messages as sent, tools, response schema) as litellm counts
        them for the configured model."""
        if not self.model:
            raise NoModelConfigured("no LLM model is configured (LLM_MODEL)")
        return count_prompt(
            self.model, self._litellm.token_counter, messages, tools, response_format
        )

    def prompt_memo(self) -> PromptMemo:
        """A memo for one conversation's calls (pass it as `LlmRequest.memo`): each message is
        redacted and counted once, in the call that first sends it."""
        if not self.model:
            raise NoModelConfigured("no LLM model is configured (LLM_MODEL)")
        return PromptMemo(self.model, self._litellm.token_counter)

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
        # A run's conversation: its earlier messages were redacted and counted by earlier calls.
        if request.memo is not None and request.memo.model == model:
            prepared = request.memo.prepare(
                request.messages, request.tools, request.response_format
            )
            redacted, findings = prepared.messages, prepared.findings
            input_tokens = prepared.input_tokens
        else:
            redacted, findings = redact_messages(request.messages)
            # The response schema is part of the prompt the provider bills.
            input_tokens = self.count_tokens(redacted, request.tools, request.response_format)
        ceiling = ceiling or RunCeiling(self.settings.llm_call_max_cost_usd)
        provider = self._provider(model)
        routed = self._routed_provider(model)
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
            inline_build.install(asyncio.get_running_loop())
            # Our ledger prices and records the call, litellm need not; it builds the request
            # on this thread (no hop to its executor) for a provider with an async path.
            with quiet_call(), inline_build.building_inline(routed):
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

        answered = await with_retries(
            CallPlan(
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
            ),
            self.settings,
            self.ledger,
        )
        response, billed = answered.response, answered.billed
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
            cost_usd=billed.cost,
            call_id=answered.call.call_id,
            attempts=answered.attempts,
            latency_ms=answered.latency_ms,
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

        base = {"api_base": self.settings.llm_api_base} if self.settings.llm_api_base else {}

        async def invoke(_: int, timeout: float) -> tuple[Any, ProviderUsage | None]:
            with quiet_call():
                response = await self._litellm.aembedding(
                    model=model,
                    input=redacted,
                    timeout=timeout,
                    max_retries=0,
                    **base,
                )
            usage = getattr(response, "usage", None)
            tokens = getattr(usage, "prompt_tokens", None) if usage else None
            if tokens is None:
                return response, None
            return response, ProviderUsage(tokens, 0, UsageDetails(), raw_usage(usage))

        plan = CallPlan(
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
        answered = await with_retries(plan, self.settings, self.ledger)
        response, cost = answered.response, answered.billed.cost
        return [list(item["embedding"]) for item in response.data], cost

    def _routed_provider(self, model: str) -> str:
        """The provider litellm's completion() will route this call to: it reads the api_base
        too (a bare model name with a known OpenAI-compatible base goes to that provider, which
        may build synchronously), so the build is inline only for what is really sent."""
        known = self._routes.get(model)
        if known is not None:
            return known
        base = self.settings.llm_api_base
        if not base:
            routed = self._provider(model)
        else:
            try:
                routed = str(self._litellm.get_llm_provider(model, api_base=base)[1])
            except Exception:
                routed = "unknown"  # not built inline: the executor path, as before
        self._routes[model] = routed
        return routed

    def _provider(self, model: str) -> str:
        # litellm resolves the provider by scanning its model lists: once per model is enough.
        known = self._providers.get(model)
        if known is not None:
            return known
        try:
            provider: str = self._litellm.get_llm_provider(model)[1]
        except Exception:
            provider = model.split("/", 1)[0] if "/" in model else "unknown"
        self._providers[model] = provider
        return provider
