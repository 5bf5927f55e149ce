"""How a run is bounded and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from llm_service.investigations.report import Report


@dataclass(frozen=True)
class RunLimits:
    """The hard limits of one run."""

    max_cost_usd: Decimal
    timeout_s: float
    max_steps: int


@dataclass
class RunOutcome:
    """A terminal state, its reason and the findings."""

    status: str
    reason: str
    report: Report
    degraded: bool = False
