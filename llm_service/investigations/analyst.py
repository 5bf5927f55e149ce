"""The degraded analyst: a fixed plan of tools chosen from the question's words, no model."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from llm_service.investigations.evidence import EvidenceLog
from llm_service.investigations.outcome import RunOutcome
from llm_service.investigations.templates import report_from_evidence
from llm_service.periods import Period, resolve_period

_KEYWORD_TOOLS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"refund|chargeback|dispute|reversal"), "revenue_state_changes"),
    (re.compile(r"dead|fail|error|ingest|drop(ped)? event"), "dead_event_summary"),
    (re.compile(r"correct|reassign|override|re-?label"), "channel_corrections"),
    (re.compile(r"model|first.touch|last.touch|linear|time.decay|disagree"),
     "compare_attribution_models"),
    (re.compile(r"\border|largest|biggest|top"), "top_orders"),
    (re.compile(r"reconcil|ledger|verif|captur"), "reconciliation_status"),
    (re.compile(r"drop|fall|fell|decline|decrease|rise|rose|increase|change|compar|vs\b|versus|week"),
     "compare_periods"),
]  # fmt: skip


def choose_channel(question: str, channels: dict[str, str]) -> str | None:
    """A channel code named in the question, by code or display name (`channels`: code → name)."""
    lowered = question.lower()
    for code, name in channels.items():
        words = {code, code.replace("_", " "), name.lower(), code.split("_")[0]}
        if any(re.search(rf"\b{re.escape(w)}\b", lowered) for w in words if len(w) > 3):
            return code
    return None


def plan(question: str, today: date, channels: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """The tools to run and their arguments, from the question's words."""
    lowered = question.lower()
    period = resolve_period(lowered, today)
    channel = choose_channel(lowered, channels)
    tools = [tool for pattern, tool in _KEYWORD_TOOLS if pattern.search(lowered)]
    if not tools:
        tools = ["channel_performance", "compare_periods"]
    elif "channel_performance" not in tools:
        tools.insert(0, "channel_performance")
    return [(tool, _arguments(tool, period, channel)) for tool in dict.fromkeys(tools)]


def _arguments(tool: str, period: Period, channel: str | None) -> dict[str, Any]:
    args: dict[str, Any] = period.as_dict()
    if tool == "compare_periods":
        args = {"current_start": args["start"], "current_end": args["end"]}
        try:
            previous = period.previous()
        except ValueError:  # none before the calendar's start: the tool itself says so
            pass
        else:
            args |= {"previous_start": previous.start.isoformat(),
                     "previous_end": previous.end.isoformat()}  # fmt: skip
    if channel and tool in ("channel_performance", "compare_periods", "revenue_state_changes",
                            "compare_attribution_models", "top_orders"):  # fmt: skip
        args["channel"] = channel
    return args


async def run_degraded(
    evidence: EvidenceLog, question: str, today: date, channels: dict[str, str], reason: str
) -> RunOutcome:
    """Run the plan and write templated findings citing every tool call."""
    await evidence.gather(1, list(plan(question, today, channels)))
    report = report_from_evidence(evidence.items, reason)
    return RunOutcome("succeeded", reason, report, degraded=True)
