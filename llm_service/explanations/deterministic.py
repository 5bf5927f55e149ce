"""The degraded answer: a summary written from the data alone, every figure from the queries."""

from __future__ import annotations

import logging
from typing import Any

from budgets.ceiling import CeilingReached
from llm_service.costs.ledger_repository import MonthlyCapExceeded
from llm_service.explanations.data import ExplanationQuery, SubjectData
from llm_service.llm.gateway import NoModelConfigured, ProviderUnavailable
from llm_service.llm.structured import InvalidModelOutput

_log = logging.getLogger("llm_service.explanations.service")  # where these lines were logged

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
    days = query.period.days
    return (
        f"{query.period.start} to {query.period.end} (end excluded, {days} "
        f"{'day' if days == 1 else 'days'})"
    )


def summarise(query: ExplanationQuery, data: SubjectData, reason: str) -> dict[str, Any]:
    """{summary, drivers, confidence} from the data: the headline and the largest movers."""
    movers = data.movers[:TOP_MOVERS]
    parts = [f"{data.headline}, {_period_text(query)}."]
    parts.extend(f"{caveat[0].upper()}{caveat[1:]}." for caveat in data.caveats)
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
        "confidence": "low" if data.empty or data.caveats else "medium",
    }


def degraded_reason(exc: Exception) -> str:
    """Why a model (or embedding) call could not give an answer, as a degraded reason code."""
    if isinstance(exc, NoModelConfigured):
        return "no_model"
    if isinstance(exc, MonthlyCapExceeded):
        return "monthly_cap_spent"
    if isinstance(exc, CeilingReached):
        return "call_ceiling"
    if isinstance(exc, InvalidModelOutput):
        return "invalid_model_output"
    if not isinstance(exc, ProviderUnavailable | TimeoutError):
        # A non-transient provider error (bad key, bad request, ...): the provider cannot
        # answer either; log it, answer from the data.
        _log.warning("the model call failed: %s", type(exc).__name__, exc_info=exc)
    return "provider_unavailable"
