"""Budget optimisation jobs as the HTTP API reads and writes them."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llm_service.periods import check_calendar

MAX_TOTAL_USD = Decimal("1000000000")
# The most one job may spend on its rationale, USD (like an investigation).
MAX_COST_USD = Decimal("0.30")
MAX_PERIOD_DAYS = 366
MAX_BOUNDS = 64
CENT = Decimal("0.01")
MODEL_TYPES = ("last_touch", "first_touch", "linear", "time_decay", "position_based", "data_driven")
ModelType = Literal[
    "last_touch", "first_touch", "linear", "time_decay", "position_based", "data_driven"
]
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CHANNEL_CODE = re.compile(r"^[a-z][a-z0-9_]{1,62}$")


def _usd_field(**limits: Any) -> Any:
    """A USD amount: a JSON string or number, at most 2 decimal places."""
    return Field(decimal_places=2, allow_inf_nan=False, **limits)


class Period(BaseModel):
    """An absolute half-open date range [start, end) in UTC, at most 366 days long."""

    model_config = ConfigDict(extra="forbid")

    start: date
    end: date

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        """Only YYYY-MM-DD strings (no timestamps, no relative phrases)."""
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if not isinstance(value, str) or not _ISO_DATE.match(value):
            raise ValueError("must be a date written YYYY-MM-DD")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        """start before end, at most 366 days apart, between 1970 and 2100."""
        check_calendar(self.start, self.end)
        if self.start >= self.end:
            raise ValueError("period.start must be before period.end")
        if (self.end - self.start).days > MAX_PERIOD_DAYS:
            raise ValueError(f"the period may be at most {MAX_PERIOD_DAYS} days long")
        return self


class ChannelBounds(BaseModel):
    """The least and most a channel may be given, USD (either may be omitted)."""

    model_config = ConfigDict(extra="forbid")

    min_usd: Decimal | None = _usd_field(default=None, ge=0, le=MAX_TOTAL_USD)
    max_usd: Decimal | None = _usd_field(default=None, ge=0, le=MAX_TOTAL_USD)

    @model_validator(mode="after")
    def _ordered(self) -> ChannelBounds:
        """min_usd no more than max_usd."""
        if self.min_usd is not None and self.max_usd is not None and self.min_usd > self.max_usd:
            raise ValueError("min_usd must not exceed max_usd")
        return self


class BudgetOptimizationCreate(BaseModel):
    """A total budget for a period, optional per-channel bounds and the attribution model."""

    model_config = ConfigDict(extra="forbid")

    total_budget_usd: Decimal = _usd_field(gt=0, le=MAX_TOTAL_USD)
    period: Period
    bounds: dict[str, ChannelBounds] = Field(default_factory=dict, max_length=MAX_BOUNDS)
    model_type: ModelType = "last_touch"
    # Unpaid channels (organic, direct, email, ...) cannot be bought: left out unless asked for
    # here, or named in `bounds`.
    include_unpaid: bool = False

    @field_validator("total_budget_usd", mode="before")
    @classmethod
    def _not_bool(cls, value: Any) -> Any:
        """Refuse true/false posing as numbers."""
        if isinstance(value, bool):
            raise ValueError("must be a USD amount")
        return value

    @field_validator("bounds")
    @classmethod
    def _codes(cls, value: dict[str, ChannelBounds]) -> dict[str, ChannelBounds]:
        """Channel codes are lower-case taxonomy codes (existence is checked against the table)."""
        bad = sorted(code for code in value if not _CHANNEL_CODE.match(code))
        if bad:
            # The caller's keys, each cut short: a long or hostile key is not echoed back.
            shown = ", ".join(code if len(code) <= 40 else code[:39] + "\u2026" for code in bad[:5])
            raise ValueError(f"not a channel code: {shown}")
        return value

    @model_validator(mode="after")
    def _minima_fit(self) -> BudgetOptimizationCreate:
        """The minimum bounds together must fit in the total budget."""
        minima = sum((b.min_usd or Decimal(0) for b in self.bounds.values()), Decimal(0))
        if minima > self.total_budget_usd:
            raise ValueError(
                f"the minimum bounds add up to {minima:.2f} USD, more than the total budget "
                f"of {self.total_budget_usd:.2f} USD"
            )
        return self

    def params(self) -> dict[str, Any]:
        """The job's parameters as stored: amounts as exact 2-decimal strings, dates ISO."""
        return {
            "total_budget_usd": _usd(self.total_budget_usd),
            "period": {"start": self.period.start.isoformat(), "end": self.period.end.isoformat()},
            "bounds": {
                code: {
                    "min_usd": _usd(b.min_usd) if b.min_usd is not None else None,
                    "max_usd": _usd(b.max_usd) if b.max_usd is not None else None,
                }
                for code, b in sorted(self.bounds.items())
            },
            "model_type": self.model_type,
            "include_unpaid": self.include_unpaid,
        }


def _usd(amount: Decimal) -> str:
    return str(amount.quantize(CENT))


class RationaleOutput(BaseModel):
    """What the model must return: an explanation of the given proposal and its risks."""

    model_config = ConfigDict(extra="forbid")

    rationale: str = Field(min_length=1, max_length=6000)
    risks: list[str] = Field(default_factory=list, max_length=12)

    @field_validator("risks")
    @classmethod
    def _short_risks(cls, value: list[str]) -> list[str]:
        """Each risk is one non-empty line of reasonable length."""
        cleaned = [r.strip() for r in value]
        if any(not r or len(r) > 600 for r in cleaned):
            raise ValueError("each risk must be 1 to 600 characters")
        return cleaned


class LlmCallOut(BaseModel):
    """One provider attempt of the job, with its exact cost."""

    id: UUID
    model: str
    attempt: int
    status: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: str
    cost_is_estimate: bool


class BudgetOptimizationOut(BaseModel):
    """A job: its request, state, proposal (deterministic figures), rationale and exact spend."""

    id: UUID
    status: str
    reason: str | None
    degraded: bool
    total_budget_usd: str
    period: dict[str, str]
    model_type: str
    bounds: dict[str, dict[str, str | None]]
    recommendations: dict[str, Any] | None
    rationale: str | None
    risks: list[str]
    cost_usd: str
    max_cost_usd: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    llm_calls: list[LlmCallOut] | None = None
