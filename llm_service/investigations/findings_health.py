"""The deterministic analyst's findings on the ledger's health: refunds, dead events, corrections.

One writer per data-health topic (refunds and chargebacks, dead events, channel corrections,
attribution models, orders, reconciliation runs); each reads its evidence and states what it
shows, citing the tool call. The revenue-movement writers and the report live in findings.py.
"""

from __future__ import annotations

from typing import Any

from llm_service.investigations.evidence import Evidence
from llm_service.investigations.report import Finding
from llm_service.investigations.understanding import Question
from llm_service.tools.headline import count, money, pct

Out = dict[str, Any]


def span(p: dict[str, Any] | None) -> str:
    """A tool output's period as "start to end (end exclusive)"."""
    p = p or {}
    return f"{p.get('start')} to {p.get('end')} (end exclusive)"


def _per_channel(out: Out) -> dict[str, dict[str, int]]:
    per: dict[str, dict[str, int]] = {}
    for r in out.get("by_channel") or []:
        entry = per.setdefault(
            r.get("channel") or "unattributed", {"refunded": 0, "chargeback": 0, "amount": 0}
        )
        entry[r["to_state"]] += int(r["changes"])
        entry["amount"] += int(r["amount_cents"])
    return per


def refunds(q: Question, answer: Evidence, baselines: dict[str, Evidence]) -> list[Finding]:
    out = answer.outcome.output or {}
    where = span(out.get("period"))
    states = {s["to_state"]: s for s in out.get("by_state") or []}
    n = sum(int(s["changes"]) for s in states.values())
    amount = sum(int(s["amount_cents"]) for s in states.values())
    cited = [answer.id]
    if not n:
        who = q.scope.single or "any channel"
        return [Finding(claim=f"No refunds or chargebacks for {who} in {where}.", evidence=cited)]
    per = _per_channel(out)
    ranked = sorted(per.items(), key=lambda kv: -(kv[1]["refunded"] + kv[1]["chargeback"]))
    top, t = ranked[0]
    k = t["refunded"] + t["chargeback"]
    if q.scope.single:
        claim = (
            f"{top} had {count(k)} refunds and chargebacks in {where} ({count(t['refunded'])} "
            f"refunds, {count(t['chargeback'])} chargebacks), reversing {money(t['amount'])} USD."
        )
    else:
        claim = (
            f"{top} had the most refunds and chargebacks in {where}: {count(k)} "
            f"({count(t['refunded'])} refunds, {count(t['chargeback'])} chargebacks, "
            f"{money(t['amount'])} USD), {pct(k * 100 / n)} of all {count(n)} reversals "
            f"({money(amount)} USD)."
        )
        if len(ranked) > 1:
            claim += (
                " Next: "
                + ", ".join(f"{c} {v['refunded'] + v['chargeback']}" for c, v in ranked[1:4])
                + "."
            )
    typical = baselines.get("typical")
    if typical is not None:
        before = _per_channel(typical.outcome.output or {}).get(top)
        weekly = (before["refunded"] + before["chargeback"]) / 4 if before else 0.0
        days = out.get("period") or {}
        claim += f" In the 4 weeks before, {top} averaged {weekly:.1f} a week" + (
            f" ({k / weekly:.1f}x that rate)." if weekly else " (none at all)."
        )
        cited.append(typical.id)
        del days
    reasons = [r for r in out.get("top_reasons") or [] if r.get("reason")]
    if reasons:
        claim += f" Most common reason: {reasons[0]['reason']!r} ({count(reasons[0]['changes'])})."
    return [Finding(claim=claim[:1500], evidence=cited)]


# -- dead events ---------------------------------------------------------------------------------


def dead_events(q: Question, answer: Evidence, baselines: dict[str, Evidence]) -> list[Finding]:
    out = answer.outcome.output or {}
    where = span(out.get("period"))
    total = int(out.get("total_events") or 0)
    cited = [answer.id]
    if not total:
        return [Finding(claim=f"No events failed ingestion in {where}.", evidence=cited)]
    errors: dict[str, tuple[int, str, str]] = {}
    for g in out.get("groups") or []:
        if int(g["events"]) > errors.get(g["source"], (0, "", ""))[0]:
            errors[g["source"]] = (int(g["events"]), g["error_type"], g["latest_error_message"])
    per = {s["source"]: int(s["events"]) for s in out.get("by_source") or []}
    if not per:
        return [Finding(claim=f"{count(total)} dead events in {where}.", evidence=cited)]
    source: str = q.source if q.source and q.source in per else max(per, key=lambda s: per[s])
    n = per.get(source, 0)
    _, error_type, message = errors.get(source, (0, "", ""))
    claim = (
        f"{source} produced {count(n)} of the {count(total)} dead events (failed ingestion) in "
        f"{where} ({pct(n * 100 / total)}), mostly {error_type}: {message!r}."
    )
    peaks = out.get("peak_days") or []
    if peaks:
        p = peaks[0]
        claim += (
            f" Peak day {p['day']}: {count(p['events'])} dead events, mostly {p['top_source']}."
        )
    typical = baselines.get("typical")
    if typical is not None:
        before = int((typical.outcome.output or {}).get("total_events") or 0)
        claim += f" In the 4 weeks before there were {before / 28:.1f} a day."
        cited.append(typical.id)
    return [Finding(claim=claim[:1500], evidence=cited)]


# -- corrections ---------------------------------------------------------------------------------


def corrections(q: Question, answer: Evidence, _: dict[str, Evidence]) -> list[Finding]:
    out = answer.outcome.output or {}
    where = span(out.get("period"))
    pairs = list(out.get("pairs") or [])
    if q.scope.channels:
        pairs.sort(key=lambda p: not ({p["from_channel"], p["to_channel"]} & set(q.scope.channels)))
    if not pairs:
        return [
            Finding(
                claim=f"No channel corrections were made in {where} or for its events.",
                evidence=[answer.id],
            )
        ]
    p = pairs[0]
    reason = (p.get("latest_reasons") or [""])[0]
    claim = (
        f"{p['event_corrections']} events recorded as {p['from_channel']} were corrected to "
        f"{p['to_channel']} ({count(p['corrections'])} corrections: "
        f"{count(p['event_corrections'])} events and "
        f"{count(p['allocation_corrections'])} allocations; "
        f"{count(p.get('about_period_events'))} concern events of {where}), by "
        f"{', '.join(p.get('corrected_by') or [])}, first on {str(p['first_corrected_at'])[:10]}"
        + (f": {reason!r}" if reason else "")
        + f". In all {count(out.get('total_corrections'))} corrections were made in the period "
        "or correct its events."
    )
    others = [f"{o['from_channel']} -> {o['to_channel']} {o['corrections']}" for o in pairs[1:4]]
    if others:
        claim += " Others: " + ", ".join(others) + "."
    return [Finding(claim=claim[:1500], evidence=[answer.id])]


# -- models, orders, reconciliation -------------------------------------------------------------


def models(q: Question, answer: Evidence, _: dict[str, Evidence]) -> list[Finding]:
    out = answer.outcome.output or {}
    rows = out.get("rows") or []
    where = span(out.get("period"))
    if not rows:
        return [
            Finding(claim=f"No attributed revenue to compare in {where}.", evidence=[answer.id])
        ]
    r = rows[0]
    by = r.get("attributed_by_model") or {}
    claim = (
        f"In {where} the attribution models disagree most on {r['channel']}: "
        f"{r['highest_model']} credits {money(by.get(r['highest_model']))} USD and "
        f"{r['lowest_model']} {money(by.get(r['lowest_model']))} USD, a spread of "
        f"{money(r['spread_cents'])} USD ({pct(r.get('spread_pct') or 0)} of the highest)."
    )
    if len(rows) > 1:
        claim += (
            " Next: "
            + ", ".join(f"{o['channel']} {money(o['spread_cents'])} USD" for o in rows[1:4])
            + "."
        )
    return [Finding(claim=claim[:1500], evidence=[answer.id])]


def orders(q: Question, answer: Evidence, _: dict[str, Evidence]) -> list[Finding]:
    out = answer.outcome.output or {}
    orders = out.get("orders") or []
    where = span(out.get("period"))
    if not orders:
        return [Finding(claim=f"No ledger orders were posted in {where}.", evidence=[answer.id])]
    o = orders[0]
    claim = (
        f"The largest order posted in {where} is {money(o['amount_cents'])} {o['currency']} "
        f"(order {o.get('order_id')}, {o['state']}, channel {o.get('channel')}, posted "
        f"{str(o['posted_at'])[:10]})."
    )
    if len(orders) > 1:
        claim += " Next: " + ", ".join(f"{money(x['amount_cents'])}" for x in orders[1:4]) + "."
    return [Finding(claim=claim[:1500], evidence=[answer.id])]


def reconciliation(q: Question, answer: Evidence, _: dict[str, Evidence]) -> list[Finding]:
    out = answer.outcome.output or {}
    where = span(out.get("period"))
    claim = (
        f"In {where}, purchase events total {money(out.get('event_purchase_revenue_cents'))} USD "
        f"({count(out.get('event_purchases'))} purchases) against "
        f"{money(out.get('ledger_revenue_cents'))} USD in the ledger "
        f"({count(out.get('ledger_rows'))} rows): a difference of "
        f"{money(out.get('event_minus_ledger_revenue_cents'))} USD; "
        f"{count(out.get('unverified_ledger_rows'))} ledger rows are unverified."
    )
    failed = [r for r in out.get("runs") or [] if r.get("state") == "failed"]
    if failed:
        claim += (
            " Failed reconciliation runs: "
            + "; ".join(
                f"{str(r['created_at'])[:10]} ({r.get('error_message')})" for r in failed[:3]
            )
            + "."
        )
    return [Finding(claim=claim[:1500], evidence=[answer.id])]
