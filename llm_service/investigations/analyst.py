"""The deterministic analyst: understands the question, plans the tools, writes the answer.

No model. The question's words give the channels (codes, names, families, paid / organic), the
period and the metric (`understanding`); the plan runs the tools that answer it together with
a baseline (the previous period, the same weekday a week earlier, a typical week of the four
before); the findings (`findings`) state the answer first, with its figures, citing the tool
calls. It also finishes a model run the provider abandoned, from the evidence already gathered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from llm_service.investigations.evidence import EvidenceLog
from llm_service.investigations.findings import call_key, write_report
from llm_service.investigations.outcome import RunOutcome
from llm_service.investigations.understanding import ChannelInfo, Question, understand
from llm_service.periods import Period

_SPECIFIC = ("refunds", "dead_events", "corrections", "models", "orders", "reconciliation")
_MODEL_NAMES = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
ALL_ROWS = 100


@dataclass(frozen=True)
class PlannedCall:
    """One tool call of the plan and the part it plays in the answer."""

    role: str  # "answer", "previous", "weekday", "typical", "cause", "context"
    topic: str
    tool: str
    arguments: dict[str, Any]

    @property
    def key(self) -> str:
        """Identity of the call (tool and arguments), to find its evidence."""
        return call_key(self.tool, self.arguments)


def topics_for(q: Question) -> list[str]:
    """What to answer, most specific first; a vague question gets the anomaly sweep."""
    specific = [t for t in _SPECIFIC if t in q.topics]
    topics = list(specific)
    if "change" in q.topics and (not specific or q.scope.channels):
        topics.append("change")
    if "performance" in q.topics and not specific:
        topics.append("performance")
    if not topics:
        topics = ["change", "performance"]
    vague = not specific and any(w in q.text.lower() for w in ("wrong", "unusual", "anomal"))
    if vague:
        topics += ["dead_events", "refunds", "corrections"]
    return list(dict.fromkeys(topics))


def _window(period: Period) -> dict[str, str]:
    return period.as_dict()


def _before(period: Period, days: int) -> Period:
    """The `days` before `period`; at the calendar's edge, the period itself (its tool then
    answers with a tool error about the edge, rather than the run failing)."""
    try:
        return Period(period.start - timedelta(days=days), period.start)
    except (OverflowError, ValueError):
        return period


def _previous(period: Period) -> Period | None:
    try:
        return period.comparable_before()
    except (OverflowError, ValueError):  # nothing before the calendar's start
        return None


def _compare(
    current: Period, previous: Period | None, channel: str | None, family: tuple[str, ...] = ()
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "current_start": current.start.isoformat(),
        "current_end": current.end.isoformat(),
        "limit": ALL_ROWS,
    }
    if previous is not None:
        args |= {
            "previous_start": previous.start.isoformat(),
            "previous_end": previous.end.isoformat(),
        }
    if channel:
        args["channel"] = channel
    elif family:  # the family's rows only: every one of them fits the tool's answer
        args["channels"] = ",".join(family)
    return args


def _model_type(q: Question) -> str | None:
    lowered = q.text.lower().replace("-", "_").replace(" ", "_")
    return next((m for m in _MODEL_NAMES if m in lowered), None)


def plan(q: Question) -> list[PlannedCall]:
    """The tool calls that answer the question, with their baselines."""
    p, channel = q.period, q.scope.single
    family = q.scope.channels if q.scope.group else ()
    calls: list[PlannedCall] = []
    model = _model_type(q)
    for topic in topics_for(q):
        if topic == "change":
            args = _compare(p, _previous(p), channel, family)
            if model:
                args["model_type"] = model
            calls.append(PlannedCall("answer", topic, "compare_periods", args))
            if p.days == 1:
                weekday = Period(p.start - timedelta(days=7), p.end - timedelta(days=7))
                calls.append(
                    PlannedCall(
                        "weekday", topic, "compare_periods", _compare(p, weekday, channel, family)
                    )
                )
            elif p.days == 7:
                typical = _before(p, 28)
                calls.append(
                    PlannedCall(
                        "typical", topic, "compare_periods", _compare(p, typical, channel, family)
                    )
                )
            if "why" in q.text.lower() and "corrections" not in q.topics:
                calls.append(
                    PlannedCall("cause", topic, "channel_corrections", {**_window(p), "limit": 20})
                )
        elif topic == "performance":
            args = {**_window(p), "limit": ALL_ROWS}
            if channel:
                args["channel"] = channel
            if model:
                args["model_type"] = model
            calls.append(PlannedCall("answer", topic, "channel_performance", args))
        elif topic == "refunds":
            args = {**_window(p), "limit": ALL_ROWS}
            if channel:
                args["channel"] = channel
            calls.append(PlannedCall("answer", topic, "revenue_state_changes", args))
            base = {**args, **_window(_before(p, 28))}
            calls.append(PlannedCall("typical", topic, "revenue_state_changes", base))
        elif topic == "dead_events":
            calls.append(
                PlannedCall("answer", topic, "dead_event_summary", {**_window(p), "limit": 50})
            )
            base = {**_window(_before(p, 28)), "limit": 50}
            calls.append(PlannedCall("typical", topic, "dead_event_summary", base))
        elif topic == "corrections":
            calls.append(
                PlannedCall("answer", topic, "channel_corrections", {**_window(p), "limit": 20})
            )
        elif topic == "models":
            args = {**_window(p), "limit": 20}
            if channel:
                args["channel"] = channel
            calls.append(PlannedCall("answer", topic, "compare_attribution_models", args))
        elif topic == "orders":
            args = {**_window(p), "limit": 5}
            if channel:
                args["channel"] = channel
            calls.append(PlannedCall("answer", topic, "top_orders", args))
        elif topic == "reconciliation":
            calls.append(
                PlannedCall("answer", topic, "reconciliation_status", {**_window(p), "limit": 10})
            )
    unique: dict[str, PlannedCall] = {}
    for call in calls:
        unique.setdefault(call.key, call)
    return list(unique.values())


async def run_degraded(
    evidence: EvidenceLog,
    question: str,
    today: date,
    channels: list[ChannelInfo],
    reason: str,
    *,
    step: int = 1,
) -> RunOutcome:
    """Answer from the plan (reusing evidence already gathered), marked degraded."""
    q = understand(question, today, channels)
    calls = plan(q)
    have = {call_key(e.outcome.name, e.outcome.arguments) for e in evidence.items}
    missing = [c for c in calls if c.key not in have]
    if missing:
        await evidence.gather(step, [(c.tool, dict(c.arguments)) for c in missing])
    report = write_report(q, calls, evidence.items, channels, reason)
    return RunOutcome("succeeded", reason, report, degraded=True)
