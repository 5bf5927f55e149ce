"""The degraded answer: a summary written from the data alone, every figure from the queries."""

from __future__ import annotations

from typing import Any

from llm_service.explanations.data import ExplanationQuery, SubjectData

TOP_MOVERS = 3

#: Why an answer is degraded, in words for the summary.
REASONS: dict[str, str] = {
    "no_model": "no language model is configured",
    "monthly_cap_spent": "the monthly LLM budget is spent",
    "provider_unavailable": "the language model provider is unavailable",
    "invalid_model_output": "the model's answer could not be validated",
    "call_ceiling": "the explanation would cost more than one call may",
    "busy": "the same explanation is still being computed",
}


def _period_text(query: ExplanationQuery) -> str:
    """The period in words."""
    return f"{query.period.start} to {query.period.end} (end excluded, {query.period.days} days)"


def summarise(query: ExplanationQuery, data: SubjectData, reason: str) -> dict[str, Any]:
    """{summary, drivers, confidence} from the data: the headline and the largest movers."""
    movers = data.movers[:TOP_MOVERS]
    parts = [f"{data.headline}, {_period_text(query)}."]
    if data.empty:
        parts.append("There is no data for this period and filter.")
    elif movers:
        listed = "; ".join(f"{m.label} {m.figure}" for m in movers)
        noun = "Largest movers" if query.subject == "period_change" else "Largest figures"
        parts.append(f"{noun}: {listed}.")
    parts.append(
        f"Figures computed directly from the data without a language model "
        f"({REASONS.get(reason, reason)})."
    )
    return {
        "summary": " ".join(parts),
        "drivers": [{"label": m.label, "figure": m.figure, "detail": m.detail} for m in movers],
        "confidence": "low" if data.empty else "medium",
    }
