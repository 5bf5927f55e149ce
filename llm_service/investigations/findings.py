"""The deterministic analyst's findings: the answer first, with its figures, citing tool calls.

Each writer reads one topic's evidence (and its baseline) and states what it shows in the
question's terms: "facebook_paid revenue fell 45.9% week over week, from 1,340.45 to 725.04
USD". A period the data does not cover is said to be unknown, never compared as zero.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from llm_service.investigations import findings_health as health
from llm_service.investigations.evidence import Evidence
from llm_service.investigations.findings_health import span
from llm_service.investigations.report import Finding, Report
from llm_service.investigations.templates import finding_for
from llm_service.investigations.understanding import ChannelInfo, Question, unknown_channels
from llm_service.periods import Period
from llm_service.tools.headline import count, money, moved, pct

if TYPE_CHECKING:
    from llm_service.investigations.analyst import PlannedCall

Out = dict[str, Any]
# metric -> (current field, previous field, label, formatter)
_COMPARE: dict[str, tuple[str, str, str]] = {
    "revenue": ("current_revenue_cents", "previous_revenue_cents", "revenue"),
    "attributed_revenue": (
        "current_attributed_revenue_cents",
        "previous_attributed_revenue_cents",
        "attributed revenue",
    ),
    "conversions": ("current_conversions", "previous_conversions", "conversions"),
    "events": ("current_events", "previous_events", "events"),
}
_PERFORMANCE = {
    "revenue": "revenue_cents",
    "attributed_revenue": "attributed_revenue_cents",
    "conversions": "conversions",
    "events": "events",
}


def call_key(tool: str, arguments: Any) -> str:
    """A stable identity for a tool call (its name and arguments), to find its evidence."""
    return f"{tool}:{json.dumps(arguments, sort_keys=True, default=str)}"


def _is_money(metric: str) -> bool:
    return metric in ("revenue", "attributed_revenue")


def _show(metric: str, value: float) -> str:
    return f"{money(value)} USD" if _is_money(metric) else count(value)


def _change_pct(current: float, previous: float) -> float | None:
    return None if previous == 0 else (current - previous) * 100 / previous


def _who(q: Question) -> str:
    if q.scope.single:
        return q.scope.single
    if q.scope.group:
        return f"{q.scope.label or 'the channels asked about'} ({', '.join(q.scope.channels)})"
    return "all channels"


def _sum(rows: list[Out], fields: tuple[str, ...]) -> Out:
    return {f: sum(int(r.get(f) or 0) for r in rows) for f in fields}


# -- change --------------------------------------------------------------------------------------


def _comparison_subject(q: Question, out: Out) -> Out:
    rows = list(out.get("rows") or [])
    if q.scope.single:
        return next((r for r in rows if r.get("channel") == q.scope.single), {})
    if q.scope.group:
        if (whole := _group_total(q, out)) is not None:
            return whole
        fields = tuple(
            k for k in (rows[0] if rows else {}) if k.startswith(("current", "previous"))
        )
        return _sum([r for r in rows if r.get("channel") in q.scope.channels], fields)
    return dict(out.get("totals") or {})


def _group_total(q: Question, out: Out) -> Out | None:
    """The database's sum over exactly the question's channels (`channels_total`), if the tool
    was asked for those channels: whole even when the rows were cut for size."""
    total = out.get("channels_total")
    asked = out.get("channels")
    if not isinstance(total, dict) or not asked or set(asked) != set(q.scope.channels):
        return None
    return dict(total)


def _cut_off(q: Question, out: Out) -> str | None:
    """Why the rows cannot be summed for the question's channels: the tool's answer was cut to
    its size cap, or its row limit left rows out (`more_rows`), and a channel asked about is not
    among the rows left (its figures are unknown, not zero), and there is no sum of them from
    the database."""
    cut = out.get("truncated") or out.get("more_rows")
    if not cut or not q.scope.channels or _group_total(q, out) is not None:
        return None
    shown = {r.get("channel") for r in out.get("rows") or []}
    missing = [c for c in q.scope.channels if c not in shown]
    if not missing:
        return None
    if not out.get("truncated"):
        return f"the tool's row limit left rows out, among them perhaps {', '.join(missing)}"
    return (
        f"the tool's answer was cut to its size limit ({out.get('omitted_rows')} rows left out, "
        f"among them {', '.join(missing)})"
    )


def _unknown_period(out: Out) -> str | None:
    cov = out.get("coverage") or {}
    prev = out.get("previous") or {}
    if not cov:
        return None
    days = (date.fromisoformat(prev["end"]) - date.fromisoformat(prev["start"])).days
    if cov.get("previous_days_with_data", days) < days:
        return (
            f"the comparison period {span(prev)} is not covered by the data (events run from "
            f"{cov.get('first_day')} to {cov.get('last_day')}; {cov.get('previous_days_with_data')}"
            f" of its {days} days have data), so it is unknown, not zero"
        )
    return None


def _current_coverage(out: Out) -> tuple[int, int] | None:
    """(days of the current period with data, its days), when the tool reported coverage."""
    cov = out.get("coverage") or {}
    cur = out.get("current") or {}
    if not cov or "current_days_with_data" not in cov or not cur:
        return None
    days = (date.fromisoformat(cur["end"]) - date.fromisoformat(cur["start"])).days
    return int(cov["current_days_with_data"]), days


def _no_current_data(out: Out) -> str | None:
    coverage = _current_coverage(out)
    if coverage is None or coverage[0] > 0:
        return None
    cov = out.get("coverage") or {}
    span = (
        f"events run from {cov.get('first_day')} to {cov.get('last_day')}"
        if cov.get("first_day")
        else "there are no events at all"
    )
    return f"none of its {coverage[1]} days has data ({span}), so it is unknown, not zero"


def _relation(out: Out) -> str:
    cur, prev = out.get("current") or {}, out.get("previous") or {}
    days = (date.fromisoformat(cur["end"]) - date.fromisoformat(cur["start"])).days
    adjacent = prev.get("end") == cur.get("start")
    periods = [
        Period(date.fromisoformat(p["start"]), date.fromisoformat(p["end"])) for p in (cur, prev)
    ]
    if adjacent and all(p.is_calendar_year() for p in periods):
        phrase = "year over year"
    elif adjacent and all(p.is_calendar_month() for p in periods):
        phrase = "month over month"
    elif adjacent and days == 7:
        phrase = "week over week"
    elif adjacent and days == 1:
        phrase = "day over day"
    elif adjacent:
        phrase = f"against the previous {days} days"
    else:
        phrase = "against the comparison period"
    return (
        f"{phrase} ({cur.get('start')} to {cur.get('end')} vs {prev.get('start')} to "
        f"{prev.get('end')}, ends exclusive)"
    )


def _movers(q: Question, out: Out, metric: str, limit: int) -> list[Out]:
    cur_f, prev_f, _ = _COMPARE[metric]
    rows = [r for r in out.get("rows") or [] if r.get("channel")]
    if q.scope.group:
        rows = [r for r in rows if r["channel"] in q.scope.channels]
    lowered = q.text.lower()
    if any(
        w in lowered for w in ("drop", "fell", "fall", "lost", "declin", "decreas", "down", "worse")
    ):
        rows.sort(key=lambda r: int(r[cur_f]) - int(r[prev_f]))
    elif any(w in lowered for w in ("rose", "rise", "gain", "grew", "increas", "jump", " up")):
        rows.sort(key=lambda r: int(r[prev_f]) - int(r[cur_f]))
    else:
        rows.sort(key=lambda r: -abs(int(r[cur_f]) - int(r[prev_f])))
    return rows[:limit]


def _mover_text(metric: str, r: Out) -> str:
    cur_f, prev_f, label = _COMPARE[metric]
    cur, prev = int(r[cur_f]), int(r[prev_f])
    return (
        f"{r['channel']} {label} {moved(_change_pct(cur, prev), cur - prev)}, from "
        f"{_show(metric, prev)} to {_show(metric, cur)}"
    )


def _change(q: Question, answer: Evidence, baselines: dict[str, Evidence]) -> list[Finding]:
    out = answer.outcome.output or {}
    metric = q.metric if q.metric in _COMPARE else "revenue"
    cur_f, prev_f, label = _COMPARE[metric]
    subject = _comparison_subject(q, out)
    cur, prev = int(subject.get(cur_f) or 0), int(subject.get(prev_f) or 0)
    unknown = _unknown_period(out)
    cited = [answer.id]
    empty = _no_current_data(out) or _cut_off(q, out)
    if empty:
        return [
            Finding(
                claim=(
                    f"{_who(q)} {label} in {span(out.get('current'))} cannot be stated: "
                    f"{empty}; no change is stated."
                )[:1500],
                evidence=cited,
            )
        ]
    if unknown:
        claim = (
            f"{_who(q)} {label} in {span(out.get('current'))} was {_show(metric, cur)}; no "
            f"change is stated because {unknown}."
        )
    else:
        claim = (
            f"{_who(q)} {label} {moved(_change_pct(cur, prev), cur - prev)} {_relation(out)}, "
            f"from {_show(metric, prev)} to {_show(metric, cur)}."
        )
        coverage = _current_coverage(out)
        if coverage is not None and coverage[0] < coverage[1]:
            claim += (
                f" Not like for like: only {coverage[0]} of the current period's {coverage[1]} "
                "days have data."
            )
        if not q.scope.single:
            movers = _movers(q, out, metric, 3)
            if movers:
                claim += (
                    " Largest movements: " + "; ".join(_mover_text(metric, r) for r in movers) + "."
                )
        for role, evidence in baselines.items():
            text = _baseline_text(q, metric, cur, role, evidence.outcome.output or {})
            if text:
                claim += " " + text
                cited.append(evidence.id)
    return [Finding(claim=claim[:1500], evidence=cited)]


def _baseline_text(q: Question, metric: str, cur: int, role: str, out: Out) -> str | None:
    if _unknown_period(out) or _cut_off(q, out):
        return None
    prev_f = _COMPARE[metric][1]
    base = int(_comparison_subject(q, out).get(prev_f) or 0)
    if role == "typical":
        weekly = base / 4
        return (
            f"Against a typical week (the 4 weeks before averaged {_show(metric, weekly)}), "
            f"it {moved(_change_pct(cur, weekly), cur - weekly)}."
        )
    if role == "weekday":
        prev = out.get("previous") or {}
        return (
            f"Against the same weekday a week earlier ({prev.get('start')}: "
            f"{_show(metric, base)}), it {moved(_change_pct(cur, base), cur - base)}."
        )
    return None


# -- performance ---------------------------------------------------------------------------------


def _performance(q: Question, answer: Evidence, _: dict[str, Evidence]) -> list[Finding]:
    out = answer.outcome.output or {}
    rows = [r for r in out.get("rows") or [] if r.get("channel")]
    total = int(out.get("total_attributed_revenue_cents") or 0)
    model = out.get("model_type", "last_touch")
    where = span(out.get("period"))
    metric = q.metric if q.metric in _PERFORMANCE else "revenue"
    key = _PERFORMANCE[metric]
    label = _COMPARE[metric][2]
    fields = ("events", "conversions", "revenue_cents", "attributed_revenue_cents")

    def facts(r: Out) -> str:
        share = pct(int(r["attributed_revenue_cents"]) * 100 / total) if total else "0.0%"
        return (
            f"revenue {money(r['revenue_cents'])} USD from {count(r['conversions'])} conversions "
            f"({count(r['events'])} events); attributed revenue ({model}) "
            f"{money(r['attributed_revenue_cents'])} USD, {share} of all attributed revenue "
            f"({money(total)} USD)"
        )

    if q.scope.single:
        row = next((r for r in rows if r["channel"] == q.scope.single), None)
        claim = (
            f"{q.scope.single} in {where}: {facts(row)}."
            if row
            else f"{q.scope.single} recorded 0 events, 0 conversions and no revenue in {where}."
        )
    elif q.scope.group:
        members = sorted(
            (r for r in rows if r["channel"] in q.scope.channels), key=lambda r: -int(r[key])
        )
        summed = {"channel": _who(q), **_sum(members, fields)}
        claim = f"{_who(q)} in {where}: {facts(summed)}."
        if members:
            claim += (
                " By channel: "
                + ", ".join(f"{r['channel']} {_show(metric, int(r[key]))}" for r in members[:6])
                + "."
            )
    else:
        ranked = sorted(rows, key=lambda r: -int(r[key]))
        everything = _sum(rows, fields)
        if not ranked:
            claim = f"No channel has events or attributed revenue in {where}."
        else:
            top = ranked[0]
            claim = (
                f"The top channel by {label} in {where} is {top['channel']} with "
                f"{_show(metric, int(top[key]))}"
                + (
                    f" ({pct(int(top[key]) * 100 / total)} of all)"
                    if key == "attributed_revenue_cents" and total
                    else ""
                )
                + "; then "
                + ", ".join(f"{r['channel']} {_show(metric, int(r[key]))}" for r in ranked[1:4])
                + f". All channels: revenue {money(everything['revenue_cents'])} USD, "
                f"{count(everything['conversions'])} conversions, {count(everything['events'])} "
                f"events, attributed revenue ({model}) {money(total)} USD."
            )
    return [Finding(claim=claim[:1500], evidence=[answer.id])]


# -- refunds -------------------------------------------------------------------------------------


Writer = Callable[[Question, Evidence, dict[str, Evidence]], list[Finding]]
WRITERS: dict[str, Writer] = {
    "change": _change,
    "performance": _performance,
    "refunds": health.refunds,
    "dead_events": health.dead_events,
    "corrections": health.corrections,
    "models": health.models,
    "orders": health.orders,
    "reconciliation": health.reconciliation,
}


def _cause(q: Question, evidence: Evidence) -> Finding | None:
    """A correction touching the channels asked about, as a possible cause of a change."""
    out = evidence.outcome.output or {}
    scope = set(q.scope.channels)
    pairs = [
        p
        for p in out.get("pairs") or []
        if not scope or {p["from_channel"], p["to_channel"]} & scope
    ]
    # Any correction touching the channels asked about counts; unscoped, only a batch does.
    if not pairs or sum(int(p["corrections"]) for p in pairs) < (1 if scope else 5):
        return None
    p = max(pairs, key=lambda x: int(x["corrections"]))
    return Finding(
        claim=(
            f"Possible cause: {count(p['event_corrections'])} events were corrected from "
            f"{p['from_channel']} to {p['to_channel']} for this period "
            f"({count(p['corrections'])} corrections in all), which moves revenue between them."
        ),
        evidence=[evidence.id],
    )


def _defaults_used(q: Question) -> str:
    """What the question did not say and was assumed (a typo or an unknown phrase must not pass
    as the question asked)."""
    said = []
    if not q.period_named:
        said.append(
            f"No period was recognised in the question, so the last {q.period.days} days "
            f"({span(q.period.as_dict())}) are used."
        )
    if not q.topics:
        said.append(
            "The question names nothing the analyst recognises (a change, a figure, refunds, "
            "dead events, corrections, models, orders, reconciliation): what follows is the "
            f"{q.metric.replace('_', ' ')} overview."
        )
    return " ".join(said) + (" " if said else "")


def write_report(
    q: Question,
    calls: list[PlannedCall],
    items: list[Evidence],
    channels: list[ChannelInfo],
    reason: str,
) -> Report:
    """Findings for each planned topic (answer first), then any other evidence's headline."""
    by_key = {call_key(e.outcome.name, e.outcome.arguments): e for e in items}
    findings: list[Finding] = []
    used: set[str] = set()
    for topic in dict.fromkeys(c.topic for c in calls):
        group = [c for c in calls if c.topic == topic]
        answer = next((by_key.get(c.key) for c in group if c.role == "answer"), None)
        if answer is None:
            continue
        used.add(answer.id)
        if answer.outcome.error:
            findings.append(
                Finding(
                    claim=f"{answer.outcome.name} failed: {answer.outcome.error}"[:1500],
                    evidence=[answer.id],
                )
            )
            continue
        baselines = {
            c.role: by_key[c.key]
            for c in group
            if c.role in ("typical", "weekday", "previous")
            and c.key in by_key
            and not by_key[c.key].outcome.error
        }
        used.update(e.id for e in baselines.values())
        findings.extend(WRITERS[topic](q, answer, baselines))
        for c in group:
            cause = by_key.get(c.key) if c.role == "cause" else None
            if cause is not None and not cause.outcome.error:
                used.add(cause.id)
                extra = _cause(q, cause)
                if extra:
                    findings.append(extra)
    for e in items:
        if e.id not in used:
            extra = finding_for(e)
            if extra is not None:
                findings.append(extra)
    unknown = unknown_channels(q.text, channels)
    warning = (
        f"No channel is named {', '.join(unknown)} (known: "
        f"{', '.join(sorted(c.code for c in channels))}); what follows is not about it. "
        if unknown
        else ""
    )
    warning += _defaults_used(q)
    if not findings:
        return Report(summary=f"{warning}No evidence could be gathered ({reason}).", findings=[])
    summary = (
        f"{warning}{findings[0].claim} (Written from {len(items)} tool result(s) without a "
        f"model: {reason}.)"
    )
    return Report(summary=summary[:3000], findings=findings[:25])
