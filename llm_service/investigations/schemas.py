"""Investigations as the HTTP API reads and writes them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llm_service.input_rules import NO_NUL, VisibleText

MAX_COST_USD = Decimal("0.30")
MAX_TIMEOUT_S = 60.0
# A run's own limit is at least a second: below it, one tool call outlasts the limit (a run asked
# for 1 ms finished "succeeded" after 24 ms).
MIN_TIMEOUT_S = 1.0
MAX_STEPS = 20


class InvestigationCreate(BaseModel):
    """An analyst's question and optional tighter limits (never looser than $0.30 and 60 s)."""

    model_config = ConfigDict(extra="forbid")

    question: VisibleText = Field(min_length=3, max_length=4000, pattern=NO_NUL)
    max_cost_usd: Decimal | None = Field(default=None, gt=0, le=MAX_COST_USD, decimal_places=6)
    timeout_s: float | None = Field(
        default=None, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S, allow_inf_nan=False
    )
    max_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)

    @field_validator("timeout_s", "max_steps", mode="before")
    @classmethod
    def _not_bool(cls, value: Any) -> Any:
        """Refuse true/false posing as numbers (true is not one second, nor one step)."""
        if isinstance(value, bool):
            raise ValueError("must be a number, not true or false")
        return value


class InvestigationLimits(BaseModel):
    """The most a run may ask for (a request's limits are capped at these) and the defaults."""

    max_cost_usd: str
    timeout_s: float
    max_steps: int
    default_max_steps: int


class ToolCallOut(BaseModel):
    """One recorded tool call."""

    id: UUID
    step: int
    tool_name: str
    arguments: Any
    result: Any
    truncated: bool
    error: str | None
    duration_ms: int | None


class LlmCallOut(BaseModel):
    """One provider attempt of the run, with its exact cost."""

    id: UUID
    model: str
    attempt: int
    status: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: str
    cost_is_estimate: bool
    latency_ms: int | None


class InvestigationOut(BaseModel):
    """A run: its state, limits, spend, findings and the evidence behind them."""

    id: UUID
    status: str
    reason: str | None
    degraded: bool
    # A cancel was accepted: a queued run is cancelled at once, a running one stops at its
    # next heartbeat (until then its status stays "running").
    cancel_requested: bool = False
    question: str
    cost_usd: str
    max_cost_usd: str
    elapsed_s: float | None
    timeout_s: float
    max_steps: int
    summary: str | None = None
    findings: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    tool_calls: list[ToolCallOut] | None = None
    llm_calls: list[LlmCallOut] | None = None


class InvestigationPage(BaseModel):
    """A page of runs, newest first; pass `next_before` as `before` for the next page."""

    items: list[InvestigationOut]
    next_before: datetime | None
