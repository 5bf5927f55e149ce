"""Validated arguments of the investigation tools: one strict pydantic model per tool."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from llm_service.analytics.models import ModelType
from llm_service.periods import Period, check_calendar

CHANNEL_PATTERN = r"^[a-z][a-z0-9_]{1,62}$"
MAX_PERIOD_DAYS = 366
MAX_ROWS = 100  # the hard cap of any tool's limit
MAX_ORDERS = 50

_START = "First day included, YYYY-MM-DD (UTC)."
_END = "Day after the last day (exclusive), YYYY-MM-DD; the week 3-9 Mar 2025 ends 2025-03-10."
_CHANNEL_HELP = "Channel code, e.g. facebook_paid or email; omit for all channels."

Channel = Annotated[str, StringConstraints(pattern=CHANNEL_PATTERN)]


def check_period(start: date, end: date, label: str = "period") -> None:
    """Raise ValueError unless start < end, the period spans at most MAX_PERIOD_DAYS days and
    lies between 1970 and 2100 (`llm_service.periods.check_calendar`)."""
    check_calendar(start, end, label)
    if start >= end:
        raise ValueError(f"the {label} must start before it ends ({start} is not before {end})")
    if (end - start).days > MAX_PERIOD_DAYS:
        raise ValueError(
            f"the {label} spans {(end - start).days} days; at most {MAX_PERIOD_DAYS} are allowed"
        )


class ToolArgs(BaseModel):
    """Base of every tool's arguments: immutable, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PeriodArgs(ToolArgs):
    """A half-open UTC period [start, end)."""

    start: date = Field(description=_START)
    end: date = Field(description=_END)

    @model_validator(mode="after")
    def _valid_period(self) -> Self:
        check_period(self.start, self.end)
        return self


class ChannelPerformanceArgs(PeriodArgs):
    """Arguments of channel_performance."""

    channel: Channel | None = Field(default=None, description=_CHANNEL_HELP)
    model_type: ModelType = Field(
        default="last_touch", description="Attribution model for attributed revenue."
    )
    limit: int = Field(default=20, ge=1, le=MAX_ROWS, description="Most channels to return.")


class ComparePeriodsArgs(ToolArgs):
    """Arguments of compare_periods."""

    current_start: date = Field(description=_START)
    current_end: date = Field(description=_END)
    previous_start: date | None = Field(
        default=None,
        description="Start of the comparison period; omit both previous_* for the equally long "
        "period just before.",
    )
    previous_end: date | None = Field(
        default=None, description="End (exclusive) of the comparison period."
    )
    channel: Channel | None = Field(default=None, description=_CHANNEL_HELP)
    channels: str | None = Field(
        default=None,
        max_length=2000,
        description="Only these channels' rows, codes separated by commas (a family, e.g. "
        "facebook_paid,instagram_paid); the totals stay over all channels. Not with `channel`.",
    )
    model_type: ModelType = Field(
        default="last_touch", description="Attribution model for attributed revenue."
    )
    limit: int = Field(default=20, ge=1, le=MAX_ROWS, description="Most channels to return.")

    @model_validator(mode="after")
    def _valid_periods(self) -> Self:
        if self.channel is not None and self.channels is not None:
            raise ValueError("give channel or channels, not both")
        self.channel_list()
        check_period(self.current_start, self.current_end, "current period")
        if (self.previous_start is None) != (self.previous_end is None):
            raise ValueError("give both previous_start and previous_end, or neither")
        start, end = self.previous()
        check_period(start, end, "previous period")
        return self

    def channel_list(self) -> list[str] | None:
        """`channels` as a list of codes (None when not given); ValueError for a malformed one."""
        if self.channels is None:
            return None
        codes = [c.strip() for c in self.channels.split(",") if c.strip()]
        bad = [c for c in codes if not re.fullmatch(CHANNEL_PATTERN, c)]
        if not codes or bad or len(codes) > MAX_ROWS:
            raise ValueError(
                f"channels must be 1 to {MAX_ROWS} channel codes separated by commas"
                + (f" (not {bad[0][:40]!r})" if bad else "")
            )
        return list(dict.fromkeys(codes))

    def previous(self) -> tuple[date, date]:
        """The comparison period: as given, or the equal-length period just before."""
        if self.previous_start is not None and self.previous_end is not None:
            return self.previous_start, self.previous_end
        before = Period(self.current_start, self.current_end).previous()
        return before.start, before.end


class RevenueStateChangesArgs(PeriodArgs):
    """Arguments of revenue_state_changes."""

    channel: Channel | None = Field(default=None, description=_CHANNEL_HELP)
    limit: int = Field(default=20, ge=1, le=MAX_ROWS, description="Most rows per list.")


class DeadEventSummaryArgs(PeriodArgs):
    """Arguments of dead_event_summary."""

    limit: int = Field(default=20, ge=1, le=MAX_ROWS, description="Most rows per list.")


class ChannelCorrectionsArgs(PeriodArgs):
    """Arguments of channel_corrections."""

    limit: int = Field(default=20, ge=1, le=MAX_ROWS, description="Most rows per list.")


class CompareAttributionModelsArgs(PeriodArgs):
    """Arguments of compare_attribution_models."""

    channel: Channel | None = Field(default=None, description=_CHANNEL_HELP)
    limit: int = Field(default=20, ge=1, le=MAX_ROWS, description="Most channels to return.")


class TopOrdersArgs(PeriodArgs):
    """Arguments of top_orders."""

    channel: Channel | None = Field(default=None, description=_CHANNEL_HELP)
    limit: int = Field(default=10, ge=1, le=MAX_ORDERS, description="Most orders to return.")


class ReconciliationStatusArgs(PeriodArgs):
    """Arguments of reconciliation_status."""

    limit: int = Field(
        default=10, ge=1, le=MAX_ORDERS, description="Most reconciliation runs to list."
    )
