"""Findings written from recorded evidence by templates: no model, every figure from the data."""

from __future__ import annotations

from typing import Any

from llm_service.investigations.evidence import Evidence
from llm_service.investigations.report import Finding, Report
from llm_service.tools.headline import headline


def finding_for(evidence: Evidence) -> Finding | None:
    """One finding for a tool result, its headline figures first; None for an error."""
    outcome = evidence.outcome
    if outcome.error or not isinstance(outcome.output, dict):
        return None
    output: dict[str, Any] = outcome.output
    line = output.get("headline") or headline(outcome.name, output)
    if not line:
        line = f"{outcome.name.replace('_', ' ')} returned a result without a known shape."
    return Finding(claim=str(line)[:1500], evidence=[evidence.id])


def report_from_evidence(items: list[Evidence], reason: str) -> Report:
    """A report built only from the evidence, for wrap-ups the model missed."""
    findings = [f for f in (finding_for(e) for e in items) if f is not None]
    if findings:
        summary = (
            f"{findings[0].claim} (Compiled from {len(findings)} tool result(s) without model "
            f"interpretation: {reason}.)"
        )
    else:
        summary = f"No evidence could be gathered ({reason})."
    return Report(summary=summary[:3000], findings=findings[:25])
