"""What one LLM call is: the request, its results, and the plan every attempt of it follows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from budgets.ceiling import RunCeiling
from budgets.ledger import CallReservation
from budgets.prices import ModelPrice
from budgets.usage import KindCost
from llm_service.errors import ServiceError
from llm_service.llm.prompt_memo import PromptMemo
from llm_service.llm.usage_read import ProviderUsage
from llm_service.pii.redact import PiiFinding

#: One provider call: (max_tokens, timeout) -> (the response, the usage it reports, if any).
Invoke = Callable[[int, float], Awaitable[tuple[Any, ProviderUsage | None]]]


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
    # A conversation's memo (one per run): its earlier messages are not redacted/counted again.
    memo: PromptMemo | None = None


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
class CallPlan:
    """Everything the attempts of one call share (what `_with_retries` used to thread through)."""

    request: LlmRequest
    price: ModelPrice
    provider: str
    ceiling: RunCeiling
    deadline: float | None
    input_tokens: int
    max_tokens: int
    findings: list[PiiFinding]
    prompt: dict[str, Any] | None
    invoke: Invoke
    cache_writes: bool = False


@dataclass(frozen=True)
class Billed:
    """How an answered call was settled."""

    cost: Decimal
    input_tokens: int | None
    output_tokens: int | None
    estimate: bool
    anomaly: str | None
    kinds: tuple[KindCost, ...] = ()


@dataclass(frozen=True)
class Answered:
    """An attempt that came back and was settled."""

    response: Any
    call: CallReservation
    attempts: int
    latency_ms: int
    billed: Billed
