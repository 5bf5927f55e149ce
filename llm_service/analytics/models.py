"""Typed, immutable results of the analytics queries.

Money is integer cents (as stored); percentages are exact Decimals with two places (see
:mod:`llm_service.analytics.ratios`). Every result names its period and filters, so a result is
self-describing when it is shown to a model or cached. ``more_rows`` means the row cap cut the
list: there were more groups than ``limit``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

ModelType = Literal[
    "last_touch", "first_touch", "linear", "time_decay", "position_based", "data_driven"
]
MODEL_TYPES: tuple[ModelType, ...] = (
    "last_touch",
    "first_touch",
    "linear",
    "time_decay",
    "position_based",
    "data_driven",
)
ReversalState = Literal["refunded", "chargeback"]


class Result(BaseModel):
    """Base of every result: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Period(Result):
    """A half-open UTC date range [start, end): start's midnight up to, not including, end's."""

    start: date
    end: date

    def bounds(self) -> tuple[datetime, datetime]:
        """The period as UTC timestamps, for `occurred_at >= $1 AND occurred_at < $2`."""
        return _midnight(self.start), _midnight(self.end)

    @property
    def days(self) -> int:
        """Length in days."""
        return (self.end - self.start).days


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


# -- channel performance --------------------------------------------------------------------


class ChannelPerformanceRow(Result):
    """One channel over a period: its own events and the revenue a model attributes to it."""

    channel: str
    events: int
    conversions: int
    revenue_cents: int
    attributed_revenue_cents: int
    attributed_share_pct: Decimal | None


class ChannelPerformance(Result):
    """Channels by attributed revenue; the total is over every channel, whatever the filter."""

    period: Period
    model_type: ModelType
    channel: str | None
    total_attributed_revenue_cents: int
    rows: tuple[ChannelPerformanceRow, ...]
    more_rows: bool


# -- period comparison ------------------------------------------------------------------------


class PeriodComparisonRow(Result):
    """One channel (or, with channel None, every channel) in both periods, with the changes."""

    channel: str | None
    current_events: int
    previous_events: int
    current_conversions: int
    previous_conversions: int
    conversions_change: int
    conversions_change_pct: Decimal | None
    current_revenue_cents: int
    previous_revenue_cents: int
    revenue_change_cents: int
    revenue_change_pct: Decimal | None
    current_attributed_revenue_cents: int
    previous_attributed_revenue_cents: int
    attributed_revenue_change_cents: int
    attributed_revenue_change_pct: Decimal | None


class DataCoverage(Result):
    """The days the tenant's events span, and how many days of each period they cover."""

    first_day: date | None
    last_day: date | None
    current_days_with_data: int
    previous_days_with_data: int


class PeriodComparison(Result):
    """Channels sorted by the size of their revenue change (largest movement first).

    ``warnings`` says when a period lies (partly) outside the days the data covers: such a
    period is not zero, it is unknown, and its changes must not be read as real movements.
    """

    current: Period
    previous: Period
    model_type: ModelType
    channel: str | None
    totals: PeriodComparisonRow
    rows: tuple[PeriodComparisonRow, ...]
    more_rows: bool
    coverage: DataCoverage | None = None
    warnings: tuple[str, ...] = ()
    channels: tuple[str, ...] | None = None  # the rows asked for (totals stay over all)
    # Those channels summed (a group's figures, whole even when the rows are cut for size);
    # None without `channels`, or when the row limit left some of them out.
    channels_total: PeriodComparisonRow | None = None


# -- revenue state changes --------------------------------------------------------------------


class StateChangeTotal(Result):
    """Refunds or chargebacks: how many, and the ledger amounts they reversed."""

    to_state: ReversalState
    changes: int
    amount_cents: int
    revenue_cents: int


class StateChangeDay(StateChangeTotal):
    """Reversals of one state on one UTC day."""

    day: date


class StateChangeChannel(StateChangeTotal):
    """Reversals of one state for one channel (None: the ledger row has no allocation)."""

    channel: str | None


class StateChangeReason(StateChangeTotal):
    """Reversals of one state with one recorded reason (None: no reason recorded)."""

    reason: str | None


class RevenueStateChanges(Result):
    """Refunds and chargebacks transitioned in the period, overall, by day, channel and reason."""

    period: Period
    channel: str | None
    by_state: tuple[StateChangeTotal, ...]
    by_day: tuple[StateChangeDay, ...]
    by_channel: tuple[StateChangeChannel, ...]
    top_reasons: tuple[StateChangeReason, ...]
    more_rows: bool


# -- dead events ------------------------------------------------------------------------------


class DeadEventGroup(Result):
    """Dead events of one source, error type and remediation status."""

    source: str
    error_type: str
    remediation_status: str
    events: int
    first_seen: datetime
    last_seen: datetime
    latest_error_message: str


class DeadEventDay(Result):
    """A UTC day's dead events (peaks first) and the source with most of them that day."""

    day: date
    events: int
    top_source: str


class DeadEventSource(Result):
    """All dead events of one source in the period."""

    source: str
    events: int


class DeadEventSummary(Result):
    """Dead events ingested in the period."""

    by_source: tuple[DeadEventSource, ...] = ()  # first: the headline figures
    period: Period
    total_events: int
    groups: tuple[DeadEventGroup, ...]
    peak_days: tuple[DeadEventDay, ...]
    more_rows: bool


# -- channel corrections ----------------------------------------------------------------------


class CorrectionPair(Result):
    """Corrections moving entities from one channel to another."""

    from_channel: str
    to_channel: str
    corrections: int
    event_corrections: int
    allocation_corrections: int
    first_corrected_at: datetime
    last_corrected_at: datetime
    corrected_by: tuple[str, ...]
    latest_reasons: tuple[str, ...]
    about_period_events: int = 0  # corrections of events (or their allocations) in the period


class CorrectionAuthor(Result):
    """Who made corrections, and how many."""

    corrected_by: str
    corrections: int


class ChannelCorrections(Result):
    """Channel corrections made in the period, or correcting events that occurred in it."""

    period: Period
    total_corrections: int
    pairs: tuple[CorrectionPair, ...]
    by_corrector: tuple[CorrectionAuthor, ...]
    more_rows: bool


# -- attribution model comparison -------------------------------------------------------------


class ModelComparisonRow(Result):
    """One channel's attributed revenue under each model, and how much the models disagree."""

    channel: str
    attributed_by_model: dict[str, int]
    highest_model: str
    lowest_model: str
    spread_cents: int
    spread_pct: Decimal | None  # spread as a percentage of the highest model's figure


class AttributionModelComparison(Result):
    """Channels by model disagreement (largest spread first), over every model with data."""

    period: Period
    channel: str | None
    model_types: tuple[str, ...]
    rows: tuple[ModelComparisonRow, ...]
    more_rows: bool


# -- top orders -------------------------------------------------------------------------------


class TopOrder(Result):
    """One ledger row: no personal data, never its metadata."""

    order_id: str | None
    transaction_id: str
    state: str
    previous_state: str | None
    amount_cents: int
    revenue_cents: int
    currency: str
    is_verified: bool
    channel: str | None
    attribution_model: str | None
    posted_at: datetime


class TopOrders(Result):
    """The largest ledger orders posted in the period."""

    period: Period
    channel: str | None
    orders: tuple[TopOrder, ...]
    more_rows: bool


# -- reconciliation ---------------------------------------------------------------------------


class LedgerStateTotal(Result):
    """Ledger rows posted in the period that are now in one state."""

    state: str
    rows: int
    amount_cents: int
    revenue_cents: int
    unverified_rows: int


class ReconciliationRun(Result):
    """One reconciliation run (error message free text, redact before showing a model)."""

    state: str
    created_at: datetime
    last_run_at: datetime | None
    error_message: str | None


class ReconciliationStatus(Result):
    """Purchase revenue in events against the ledger, and the reconciliation runs about it."""

    period: Period
    event_purchases: int
    event_purchase_revenue_cents: int
    ledger_rows: int
    ledger_revenue_cents: int
    unverified_ledger_rows: int
    event_minus_ledger_revenue_cents: int
    ledger_by_state: tuple[LedgerStateTotal, ...]
    runs: tuple[ReconciliationRun, ...]
    more_rows: bool
