"""The headline of a tool result: its key figures in one line, placed before the rows.

A model (or a person) reading a tool result sees the point first: the total, the largest
movement, the peak, the warning. Money is shown in currency units (cents / 100, USD).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def money(cents: int | float | None) -> str:
    """Cents as currency units with thousands separators: 134045 -> '1,340.45'."""
    return f"{(cents or 0) / 100:,.2f}"


def count(value: int | float | None) -> str:
    """A count with thousands separators."""
    return f"{int(value or 0):,}"


def pct(value: Any) -> str:
    """A percentage to one decimal place (absolute value; the verb carries the sign)."""
    return f"{abs(float(value)):.1f}%"


def moved(change_pct: Any, change: int | float) -> str:
    """'rose 12.3%' / 'fell 45.9%' / 'was unchanged' / 'rose from zero'."""
    if change == 0:
        return "was unchanged"
    verb = "rose" if change > 0 else "fell"
    return f"{verb} {pct(change_pct)}" if change_pct is not None else f"{verb} from zero"


def _period(out: dict[str, Any], key: str = "period") -> str:
    p = out.get(key) or {}
    return f"{p.get('start')} to {p.get('end')}"


def _performance(out: dict[str, Any]) -> str:
    rows = out.get("rows") or []
    if not rows:
        return f"No channel data in {_period(out)}."
    top = rows[0]
    return (
        f"{_period(out)} ({out.get('model_type')}): total attributed revenue "
        f"{money(out.get('total_attributed_revenue_cents'))} USD; top channel {top['channel']} "
        f"with {money(top['attributed_revenue_cents'])} USD attributed "
        f"({top.get('attributed_share_pct')}%), revenue {money(top['revenue_cents'])} USD, "
        f"{count(top['conversions'])} conversions."
    )


def _comparison(out: dict[str, Any]) -> str:
    cur, prev = _period(out, "current"), _period(out, "previous")
    warnings = list(out.get("warnings") or [])
    rows = out.get("rows") or []
    t = out.get("totals") or {}
    parts = []
    if warnings:
        parts.append("WARNING: " + "; ".join(warnings) + ".")
    subject = rows[0] if out.get("channel") and rows else t
    who = out.get("channel") or "all channels"
    change = moved(subject.get("revenue_change_pct"), subject.get("revenue_change_cents", 0))
    parts.append(
        f"{who} revenue {change} ({cur} vs {prev}), from "
        f"{money(subject.get('previous_revenue_cents'))} to "
        f"{money(subject.get('current_revenue_cents'))} USD; conversions "
        f"{subject.get('previous_conversions', 0)} -> {subject.get('current_conversions', 0)}."
    )
    if rows and not out.get("channel"):
        r = rows[0]
        parts.append(
            f"Largest movement: {r['channel']} revenue "
            f"{moved(r.get('revenue_change_pct'), r['revenue_change_cents'])}, from "
            f"{money(r['previous_revenue_cents'])} to {money(r['current_revenue_cents'])} USD."
        )
    return " ".join(parts)


def _state_changes(out: dict[str, Any]) -> str:
    states = {s["to_state"]: s for s in out.get("by_state") or []}
    if not states:
        return f"No refunds or chargebacks in {_period(out)}."
    text = ", ".join(
        f"{count(s['changes'])} {name} ({money(s['amount_cents'])} USD)"
        for name, s in states.items()
    )
    per: dict[str, int] = {}
    for row in out.get("by_channel") or []:
        per[row["channel"] or "unattributed"] = per.get(row["channel"] or "unattributed", 0) + int(
            row["changes"]
        )
    top = max(per.items(), key=lambda kv: kv[1]) if per else None
    lead = f"; most on {top[0]} ({count(top[1])})" if top else ""
    return f"{_period(out)}: {text}{lead}."


def _dead_events(out: dict[str, Any]) -> str:
    total = out.get("total_events", 0)
    if not total:
        return f"No dead events in {_period(out)}."
    sources = out.get("by_source") or [{}]
    source, n = sources[0].get("source"), sources[0].get("events")
    peak = (out.get("peak_days") or [{}])[0]
    return (
        f"{_period(out)}: {count(total)} dead events; largest source {source} with {count(n)}; "
        f"peak day {peak.get('day')} with {count(peak.get('events'))} (mostly "
        f"{peak.get('top_source')})."
    )


def _corrections(out: dict[str, Any]) -> str:
    pairs = out.get("pairs") or []
    if not pairs:
        return f"No channel corrections made in or about {_period(out)}."
    p = pairs[0]
    return (
        f"{_period(out)}: {count(out.get('total_corrections'))} corrections made in the period or "
        f"of its events; most {p['from_channel']} -> {p['to_channel']}: {count(p['corrections'])} "
        f"({count(p['event_corrections'])} events, {count(p['allocation_corrections'])} "
        f"allocations), {count(p.get('about_period_events'))} about events of the period."
    )


def _models(out: dict[str, Any]) -> str:
    rows = out.get("rows") or []
    if not rows:
        return f"No attributed revenue in {_period(out)}."
    r = rows[0]
    by = r.get("attributed_by_model") or {}
    return (
        f"{_period(out)}: models disagree most on {r['channel']}: {r['highest_model']} "
        f"{money(by.get(r['highest_model']))} vs {r['lowest_model']} "
        f"{money(by.get(r['lowest_model']))} USD, spread {money(r['spread_cents'])} USD "
        f"({r.get('spread_pct')}%)."
    )


def _orders(out: dict[str, Any]) -> str:
    orders = out.get("orders") or []
    if not orders:
        return f"No ledger orders posted in {_period(out)}."
    o = orders[0]
    return (
        f"{_period(out)}: largest order {o.get('order_id')} of {money(o['amount_cents'])} "
        f"{o.get('currency', 'USD')} ({o['state']}, channel {o.get('channel')})."
    )


def _reconciliation(out: dict[str, Any]) -> str:
    failed = [r for r in out.get("runs") or [] if r.get("state") == "failed"]
    return (
        f"{_period(out)}: purchases in events {money(out.get('event_purchase_revenue_cents'))} "
        f"USD vs ledger {money(out.get('ledger_revenue_cents'))} USD; difference "
        f"{money(out.get('event_minus_ledger_revenue_cents'))} USD; "
        f"{count(out.get('unverified_ledger_rows'))} unverified ledger rows; "
        f"{len(failed)} failed reconciliation run(s)."
    )


_HEADLINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "channel_performance": _performance,
    "compare_periods": _comparison,
    "revenue_state_changes": _state_changes,
    "dead_event_summary": _dead_events,
    "channel_corrections": _corrections,
    "compare_attribution_models": _models,
    "top_orders": _orders,
    "reconciliation_status": _reconciliation,
}


def headline(tool: str, output: dict[str, Any]) -> str | None:
    """The headline of one tool's (JSON-ready) output, or None for an unknown tool."""
    make = _HEADLINES.get(tool)
    if make is None:
        return None
    try:
        return make(output)
    except (KeyError, TypeError, ValueError):  # a shape we do not know: no headline, no crash
        return None


def with_headline(tool: str, output: dict[str, Any]) -> dict[str, Any]:
    """The output with its headline as the first key."""
    line = headline(tool, output)
    return {"headline": line, **output} if line else output
