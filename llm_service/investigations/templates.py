"""Findings written from recorded evidence by templates: no model, every figure from the data."""

from __future__ import annotations

from typing import Any

from llm_service.investigations.evidence import Evidence
from llm_service.investigations.report import Finding, Report

_MAX_FIELDS = 6


def _rows(output: Any) -> list[dict[str, Any]]:
    """The first list of records found in a tool's output."""
    if isinstance(output, list):
        return [r for r in output if isinstance(r, dict)]
    if isinstance(output, dict):
        for value in output.values():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return [r for r in value if isinstance(r, dict)]
    return []


def _describe_row(row: dict[str, Any]) -> str:
    fields = [
        f"{key.replace('_', ' ')} {value}"
        for key, value in row.items()
        if isinstance(value, str | int | float) or value is None
    ]
    return ", ".join(fields[:_MAX_FIELDS])


def finding_for(evidence: Evidence) -> Finding | None:
    """One templated finding for a tool result, or None for an error."""
    outcome = evidence.outcome
    if outcome.error:
        return None
    rows = _rows(outcome.output)
    args = outcome.arguments if isinstance(outcome.arguments, dict) else {}
    scope = ", ".join(f"{k} {v}" for k, v in args.items() if k in ("start", "end", "channel"))
    label = outcome.name.replace("_", " ")
    if not rows:
        claim = f"{label} ({scope or 'default period'}) found no matching rows."
    else:
        claim = (
            f"{label} ({scope or 'default period'}): {len(rows)} row(s); the first is "
            f"{_describe_row(rows[0])}."
        )
        if len(rows) > 1:
            claim += f" Next: {_describe_row(rows[1])}."
    return Finding(claim=claim[:1500], evidence=[evidence.id])


def report_from_evidence(items: list[Evidence], reason: str) -> Report:
    """A report built only from the evidence, for degraded runs and wrap-ups the model missed."""
    findings = [f for f in (finding_for(e) for e in items) if f is not None]
    if findings:
        summary = (
            f"Findings compiled from {len(findings)} tool result(s) without model interpretation "
            f"({reason})."
        )
    else:
        summary = f"No evidence could be gathered ({reason})."
    return Report(summary=summary, findings=findings[:25])
