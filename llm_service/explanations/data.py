"""The data an explanation rests on: the analytics queries, their fingerprint and citations.

No SQL here: every figure comes from the `llm_service.analytics.*_queries` modules (the queries the
investigation tools use), run by the caller inside a READ ONLY tenant transaction. Money leaves
this module as exact decimal strings in major units ("1234.56"), never floats.

When a channel is given, the model sees and the citations carry only that channel's figures
(never the all-channel totals the queries also return), so the fingerprint of that channel's
rows covers everything the explanation says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from llm_service.analytics import (
    channel_queries,
    fingerprint_queries,
    ledger_queries,
    trend_queries,
)
from llm_service.analytics.models import (
    AttributionModelComparison,
    ChannelPerformance,
    ChannelPerformanceRow,
    PeriodComparison,
    PeriodComparisonRow,
    ReconciliationStatus,
)
from llm_service.periods import Period

#: The analytics query (and fingerprint subject) behind each explanation subject.
SUBJECT_QUERIES: dict[str, str] = {
    "channel_performance": "channel_performance",
    "period_change": "period_comparison",
    "attribution_model_disagreement": "attribution_model_comparison",
    "revenue_reconciliation": "reconciliation_status",
}
#: Rows (channels) shown to the model, and cited.
PROMPT_ROWS = 12
CITED_ROWS = 5
#: What the model is told when a period holds no events at all.
NO_EVENTS_WARNING = "no events were recorded in this period: every figure is unknown, not zero"
_QUERY_LIMIT = 50


@dataclass(frozen=True)
class ExplanationQuery:
    """A request resolved to absolute dates and defaults: what the cache scope is made of."""

    subject: str
    period: Period
    metric: str
    comparison: Period | None = None
    channel: str | None = None
    attribution_model: str | None = None
    question: str | None = None

    def scope_params(self) -> dict[str, Any]:
        """The structured parameters of the cache scope (absolute dates only)."""
        params: dict[str, Any] = {
            "start": self.period.start,
            "end": self.period.end,
            "metric": self.metric,
            "channel": self.channel,
        }
        if self.attribution_model is not None:
            params["attribution_model"] = self.attribution_model
        if self.comparison is not None:
            params["comparison"] = {"start": self.comparison.start, "end": self.comparison.end}
        return params


@dataclass(frozen=True)
class Mover:
    """One row of the data as a deterministic summary uses it: a label and its figures."""

    label: str
    figure: str
    detail: str


@dataclass(frozen=True)
class SubjectData:
    """What the model is shown, what is cited, and the figures of a deterministic summary."""

    query: str
    parameters: dict[str, Any]
    prompt_data: dict[str, Any]
    citations: list[dict[str, Any]]
    headline: str
    movers: list[Mover] = field(default_factory=list)
    empty: bool = False
    # Periods the data does not (fully) cover: their figures are unknown, never zero.
    caveats: tuple[str, ...] = ()


def money(cents: int) -> str:
    """Cents as an exact decimal string in major units: 123456 -> '1234.56'."""
    return str(Decimal(cents).scaleb(-2).quantize(Decimal("0.01")))


def show_money(cents: int) -> str:
    """Cents for people: 123456 -> '1,234.56'; signed when asked by the caller."""
    return f"{Decimal(cents).scaleb(-2):,.2f}"


def _signed_money(cents: int) -> str:
    """A change in money for people: '+1,234.56' or '-1,234.56'."""
    return ("+" if cents >= 0 else "-") + show_money(abs(cents))


def _pct(value: Decimal | None) -> str | None:
    """A percentage as an exact string, or None."""
    return None if value is None else str(value)


def _signed_pct(value: Decimal | None) -> str:
    """A change percentage for people: ' (+12.50%)', or '' when undefined."""
    if value is None:
        return ""
    return f" ({'+' if value >= 0 else ''}{value}%)"


def _iso(period: Period) -> dict[str, str]:
    """A period as ISO dates."""
    return period.as_dict()


def fingerprint_args(query: ExplanationQuery) -> tuple[Any, ...]:
    """The fingerprint statement's parameters for a query (both periods for a change)."""
    periods = [(query.period.start, query.period.end)]
    if query.comparison is not None:
        periods.append((query.comparison.start, query.comparison.end))
    return fingerprint_queries.fingerprint_args(
        SUBJECT_QUERIES[query.subject], periods, channel=query.channel
    )


async def fingerprint(conn: asyncpg.Connection, query: ExplanationQuery) -> str:
    """The data fingerprint of the rows the explanation rests on (both periods for a change)."""
    comparison = query.comparison
    return await fingerprint_queries.data_fingerprint(
        conn,
        SUBJECT_QUERIES[query.subject],
        query.period.start,
        query.period.end,
        channel=query.channel,
        comparison=(comparison.start, comparison.end) if comparison is not None else None,
    )


async def gather(conn: asyncpg.Connection, query: ExplanationQuery) -> SubjectData:
    """Run the subject's analytics query and shape its result for the model and the citations."""
    period = query.period
    if query.subject == "channel_performance":
        performance = await channel_queries.channel_performance(
            conn,
            period.start,
            period.end,
            channel=query.channel,
            model_type=query.attribution_model or "last_touch",
            limit=_QUERY_LIMIT,
        )
        return _channel_performance(query, performance)
    if query.subject == "period_change":
        assert query.comparison is not None
        comparison = await trend_queries.period_comparison(
            conn,
            (period.start, period.end),
            (query.comparison.start, query.comparison.end),
            channel=query.channel,
            model_type=query.attribution_model or "last_touch",
            limit=_QUERY_LIMIT,
        )
        return _period_change(query, comparison)
    if query.subject == "attribution_model_disagreement":
        models = await channel_queries.attribution_model_comparison(
            conn, period.start, period.end, channel=query.channel, limit=_QUERY_LIMIT
        )
        return _model_disagreement(query, models)
    if query.subject == "revenue_reconciliation":
        status = await ledger_queries.reconciliation_status(
            conn, period.start, period.end, limit=_QUERY_LIMIT
        )
        return _reconciliation(query, status)
    raise ValueError(f"unknown subject {query.subject!r}")  # pragma: no cover - validated


# -- channel performance ------------------------------------------------------------------------


def _perf_value(metric: str, row: ChannelPerformanceRow) -> int:
    """A channel's amount of the metric (cents, or a count of conversions)."""
    if metric == "conversions":
        return row.conversions
    return row.attributed_revenue_cents if metric == "attributed_revenue" else row.revenue_cents


def _perf_row(row: ChannelPerformanceRow, with_share: bool) -> dict[str, Any]:
    """One channel's figures for the model."""
    out: dict[str, Any] = {
        "channel": row.channel,
        "events": row.events,
        "conversions": row.conversions,
        "revenue": money(row.revenue_cents),
        "attributed_revenue": money(row.attributed_revenue_cents),
    }
    if with_share:
        out["attributed_share_pct"] = _pct(row.attributed_share_pct)
    return out


def _perf_figure(metric: str, row: ChannelPerformanceRow) -> str:
    """A channel's figure for the metric, for people."""
    if metric == "conversions":
        return f"{row.conversions:,} conversions"
    cents = row.attributed_revenue_cents if metric == "attributed_revenue" else row.revenue_cents
    return show_money(cents)


def _channel_performance(query: ExplanationQuery, result: ChannelPerformance) -> SubjectData:
    """Shape channel_performance for the model, the citations and a deterministic summary."""
    whole = query.channel is None
    rows = sorted(result.rows, key=lambda r: (-_perf_value(query.metric, r), r.channel))
    parameters = {
        **_iso(query.period),
        "channel": query.channel,
        "model_type": result.model_type,
    }
    data: dict[str, Any] = {
        "period": _iso(query.period),
        "attribution_model": result.model_type,
        "channel_filter": query.channel,
        "channels": [_perf_row(r, whole) for r in rows[:PROMPT_ROWS]],
        "more_channels": len(rows) > PROMPT_ROWS or result.more_rows,
    }
    figures: dict[str, Any] = {
        "channels": [_perf_row(r, whole) for r in rows[:CITED_ROWS]],
    }
    total = sum(_perf_value(query.metric, r) for r in rows)
    if whole:
        data["total_attributed_revenue"] = money(result.total_attributed_revenue_cents)
        figures["total_attributed_revenue"] = money(result.total_attributed_revenue_cents)
        figures["channel_count"] = len(rows)
    label = query.metric.replace("_", " ")
    empty = not rows or all(r.events == 0 for r in rows)
    if empty:
        # No events: every figure is unknown, not zero (the summary says there is no data).
        data["warnings"] = [NO_EVENTS_WARNING]
        headline = f"{label.capitalize()} for {query.channel or 'any channel'} cannot be stated"
    else:
        total_text = (
            f"{total:,} conversions" if query.metric == "conversions" else show_money(total)
        )
        scope = f"for {query.channel}" if query.channel else f"across {len(rows)} channels"
        headline = f"{label.capitalize()} {scope} was {total_text}"
        if query.metric == "attributed_revenue":
            headline += f" ({result.model_type} attribution)"
    movers = [
        Mover(
            label=r.channel,
            figure=_perf_figure(query.metric, r),
            detail=(
                f"{r.events:,} events, {r.conversions:,} conversions, revenue "
                f"{show_money(r.revenue_cents)}, attributed "
                f"{show_money(r.attributed_revenue_cents)}"
                + (f" ({r.attributed_share_pct}% of attributed)" if whole else "")
            ),
        )
        for r in rows
    ]
    return SubjectData(
        query="channel_performance",
        parameters=parameters,
        prompt_data=data,
        citations=[{"query": "channel_performance", "parameters": parameters, "figures": figures}],
        headline=headline,
        movers=movers,
        empty=empty,
    )


# -- period change ------------------------------------------------------------------------------


def _change(metric: str, row: PeriodComparisonRow) -> tuple[int, int, int, Decimal | None]:
    """(current, previous, change, change %) of the metric in a comparison row."""
    if metric == "conversions":
        return (
            row.current_conversions,
            row.previous_conversions,
            row.conversions_change,
            row.conversions_change_pct,
        )
    if metric == "attributed_revenue":
        return (
            row.current_attributed_revenue_cents,
            row.previous_attributed_revenue_cents,
            row.attributed_revenue_change_cents,
            row.attributed_revenue_change_pct,
        )
    return (
        row.current_revenue_cents,
        row.previous_revenue_cents,
        row.revenue_change_cents,
        row.revenue_change_pct,
    )


def _comparison_row(row: PeriodComparisonRow) -> dict[str, Any]:
    """One channel (or the totals) in both periods, for the model."""
    return {
        "channel": row.channel or "ALL CHANNELS",
        "events": [row.current_events, row.previous_events],
        "conversions": [row.current_conversions, row.previous_conversions],
        "conversions_change_pct": _pct(row.conversions_change_pct),
        "revenue": [money(row.current_revenue_cents), money(row.previous_revenue_cents)],
        "revenue_change": money(row.revenue_change_cents),
        "revenue_change_pct": _pct(row.revenue_change_pct),
        "attributed_revenue": [
            money(row.current_attributed_revenue_cents),
            money(row.previous_attributed_revenue_cents),
        ],
        "attributed_revenue_change": money(row.attributed_revenue_change_cents),
        "attributed_revenue_change_pct": _pct(row.attributed_revenue_change_pct),
    }


def _show(metric: str, amount: int, signed: bool = False) -> str:
    """An amount of the metric for people."""
    if metric == "conversions":
        return f"{amount:+,}" if signed else f"{amount:,}"
    return _signed_money(amount) if signed else show_money(amount)


def _period_change(query: ExplanationQuery, result: PeriodComparison) -> SubjectData:
    """Shape period_comparison for the model, the citations and a deterministic summary."""
    assert query.comparison is not None
    rows = sorted(result.rows, key=lambda r: (-abs(_change(query.metric, r)[2]), r.channel or ""))
    # With a channel, its own row is the whole story (the totals row spans every channel).
    base = result.totals if query.channel is None else (rows[0] if rows else None)
    parameters = {
        "current": _iso(query.period),
        "previous": _iso(query.comparison),
        "channel": query.channel,
        "model_type": result.model_type,
    }
    data: dict[str, Any] = {
        "current_period": _iso(query.period),
        "previous_period": _iso(query.comparison),
        "attribution_model": result.model_type,
        "channel_filter": query.channel,
        "pairs_are": "[current, previous]",
        "channels": [_comparison_row(r) for r in rows[:PROMPT_ROWS]],
        "more_channels": len(rows) > PROMPT_ROWS or result.more_rows,
    }
    if result.warnings:
        data["warnings"] = list(result.warnings)
    figures: dict[str, Any] = {"channels": [_comparison_row(r) for r in rows[:CITED_ROWS]]}
    if query.channel is None:
        data["totals"] = _comparison_row(result.totals)
        figures["totals"] = _comparison_row(result.totals)
    label = query.metric.replace("_", " ")
    coverage = result.coverage
    unknown = coverage is not None and (
        coverage.current_days_with_data == 0 or coverage.previous_days_with_data == 0
    )
    who = query.channel or "all channels"
    if unknown:
        # A period without data is unknown, not zero: no change (nor any mover) is stated.
        headline = (
            f"{label.capitalize()} for {who} cannot be compared between {query.comparison.start} "
            f"to {query.comparison.end} and {query.period.start} to {query.period.end}"
        )
        rows = []
    elif base is None:
        headline = f"No {label} for {query.channel} in either period"
    else:
        current, previous, change, pct = _change(query.metric, base)
        headline = (
            f"{label.capitalize()} for {who} went from {_show(query.metric, previous)} "
            f"({query.comparison.start} to {query.comparison.end}) to "
            f"{_show(query.metric, current)} ({query.period.start} to {query.period.end}): "
            f"{_show(query.metric, change, signed=True)}{_signed_pct(pct)}"
        )
    movers = []
    for r in rows:
        current, previous, change, pct = _change(query.metric, r)
        movers.append(
            Mover(
                label=r.channel or "all channels",
                figure=f"{_show(query.metric, change, signed=True)}{_signed_pct(pct)}",
                detail=(
                    f"{label} {_show(query.metric, previous)} -> {_show(query.metric, current)}"
                ),
            )
        )
    return SubjectData(
        query="period_comparison",
        parameters=parameters,
        prompt_data=data,
        citations=[{"query": "period_comparison", "parameters": parameters, "figures": figures}],
        headline=headline,
        movers=movers,
        empty=not unknown
        and (base is None or (base.current_events == 0 and base.previous_events == 0 and not rows)),
        caveats=result.warnings,
    )


# -- attribution model disagreement -------------------------------------------------------------


def _model_disagreement(query: ExplanationQuery, result: AttributionModelComparison) -> SubjectData:
    """Shape attribution_model_comparison for the model, the citations and a summary."""
    rows = list(result.rows)
    parameters = {**_iso(query.period), "channel": query.channel}

    def row_data(r: Any) -> dict[str, Any]:
        """One channel under every model."""
        return {
            "channel": r.channel,
            "attributed_revenue_by_model": {
                m: money(c) for m, c in sorted(r.attributed_by_model.items())
            },
            "highest_model": r.highest_model,
            "lowest_model": r.lowest_model,
            "spread": money(r.spread_cents),
            "spread_pct_of_highest": _pct(r.spread_pct),
        }

    data = {
        "period": _iso(query.period),
        "channel_filter": query.channel,
        "models": list(result.model_types),
        "channels": [row_data(r) for r in rows[:PROMPT_ROWS]],
        "more_channels": len(rows) > PROMPT_ROWS or result.more_rows,
    }
    figures = {"models": list(result.model_types), "channels": [row_data(r) for r in rows[:5]]}
    if rows:
        top = rows[0]
        headline = (
            f"Across {len(result.model_types)} attribution models, the largest disagreement is "
            f"on {top.channel}: {top.highest_model} attributes "
            f"{show_money(top.attributed_by_model[top.highest_model])}, {top.lowest_model} "
            f"{show_money(top.attributed_by_model[top.lowest_model])}"
        )
    else:
        headline = "No attributed revenue in the period"
    movers = [
        Mover(
            label=r.channel,
            figure=f"spread {show_money(r.spread_cents)}"
            + (f" ({r.spread_pct}% of the highest)" if r.spread_pct is not None else ""),
            detail=(
                f"{r.highest_model} {show_money(r.attributed_by_model[r.highest_model])} vs "
                f"{r.lowest_model} {show_money(r.attributed_by_model[r.lowest_model])}"
            ),
        )
        for r in rows
    ]
    return SubjectData(
        query="attribution_model_comparison",
        parameters=parameters,
        prompt_data=data,
        citations=[
            {"query": "attribution_model_comparison", "parameters": parameters, "figures": figures}
        ],
        headline=headline,
        movers=movers,
        empty=not rows,
    )


# -- revenue reconciliation ---------------------------------------------------------------------


def _reconciliation(query: ExplanationQuery, result: ReconciliationStatus) -> SubjectData:
    """Shape reconciliation_status for the model, the citations and a summary."""
    parameters = _iso(query.period)
    states = [
        {
            "state": s.state,
            "rows": s.rows,
            "amount": money(s.amount_cents),
            "revenue": money(s.revenue_cents),
            "unverified_rows": s.unverified_rows,
        }
        for s in sorted(result.ledger_by_state, key=lambda s: (-s.revenue_cents, s.state))
    ]
    figures: dict[str, Any] = {
        "event_purchases": result.event_purchases,
        "event_purchase_revenue": money(result.event_purchase_revenue_cents),
        "ledger_rows": result.ledger_rows,
        "ledger_revenue": money(result.ledger_revenue_cents),
        "unverified_ledger_rows": result.unverified_ledger_rows,
        "event_minus_ledger_revenue": money(result.event_minus_ledger_revenue_cents),
        "ledger_by_state": states,
    }
    runs = [
        {
            "state": r.state,
            "created_at": r.created_at.isoformat(),
            # Free text: the gateway redacts it before the provider sees it; never cited.
            "error_message": r.error_message,
        }
        for r in result.runs[:PROMPT_ROWS]
    ]
    run_states: dict[str, int] = {}
    for r in result.runs:
        run_states[r.state] = run_states.get(r.state, 0) + 1
    figures["reconciliation_runs_by_state"] = dict(sorted(run_states.items()))
    data = {"period": _iso(query.period), **figures, "reconciliation_runs": runs}
    headline = (
        f"Purchase revenue in events was {show_money(result.event_purchase_revenue_cents)} "
        f"against {show_money(result.ledger_revenue_cents)} in the ledger: a difference of "
        f"{_signed_money(result.event_minus_ledger_revenue_cents)}"
    )
    movers = [
        Mover(
            label="events minus ledger",
            figure=_signed_money(result.event_minus_ledger_revenue_cents),
            detail=(
                f"{result.event_purchases:,} purchase events vs {result.ledger_rows:,} ledger rows"
            ),
        ),
        Mover(
            label="unverified ledger rows",
            figure=f"{result.unverified_ledger_rows:,}",
            detail=f"of {result.ledger_rows:,} ledger rows posted in the period",
        ),
    ]
    movers += [
        Mover(
            label=f"ledger {s.state}",
            figure=show_money(s.revenue_cents),
            detail=f"{s.rows:,} rows, amount {show_money(s.amount_cents)}",
        )
        for s in sorted(result.ledger_by_state, key=lambda s: (-s.revenue_cents, s.state))
        if s.state != "captured"
    ]
    if run_states:
        movers.append(
            Mover(
                label="reconciliation runs",
                figure=", ".join(f"{n} {state}" for state, n in sorted(run_states.items())),
                detail=f"runs about the period ({len(result.runs)} listed)",
            )
        )
    return SubjectData(
        query="reconciliation_status",
        parameters=parameters,
        prompt_data=data,
        citations=[
            {"query": "reconciliation_status", "parameters": parameters, "figures": figures}
        ],
        headline=headline,
        movers=movers,
        empty=result.event_purchases == 0 and result.ledger_rows == 0,
    )


def today_utc() -> date:
    """Today's date in UTC (relative periods are resolved against it)."""
    return datetime.now(UTC).date()
