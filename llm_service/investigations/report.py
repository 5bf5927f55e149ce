"""The shape of an investigation's answer: a summary and findings that cite recorded tool calls."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Finding(BaseModel):
    """One claim and the tool calls (evidence ids) that support it."""

    claim: str = Field(min_length=1, max_length=1500)
    evidence: list[str] = Field(min_length=1, max_length=20)


class Report(BaseModel):
    """What an investigation concludes."""

    summary: str = Field(min_length=1, max_length=3000)
    findings: list[Finding] = Field(default_factory=list, max_length=25)


class UnknownEvidence(ValueError):
    """A finding cites a tool call that does not exist in this run."""


def citation_check(known: set[str]) -> Any:
    """A validator refusing reports that cite tool calls this run never made."""

    def check(report: Report) -> None:
        cited = {e for f in report.findings for e in f.evidence}
        unknown = sorted(cited - known)
        if unknown:
            raise UnknownEvidence(
                f"findings cite evidence ids that do not exist: {', '.join(unknown[:5])}; "
                f"cite only these: {', '.join(sorted(known)[:30])}"
            )
        if not report.findings and known:
            raise UnknownEvidence("give at least one finding citing the evidence gathered")

    return check


REPORT_INSTRUCTIONS = (
    'Answer with ONLY a JSON object: {"summary": "<2-4 sentences>", "findings": [{"claim": '
    '"<one specific, quantified claim>", "evidence": ["<evidence_id>", ...]}]}. Every claim must '
    "cite the evidence_id values of the tool results that support it, and its figures must come "
    "from those results. Never cite an id you did not receive."
)
