"""What `generate_demo_data` returns: the summary of what it wrote and the anomalies planted."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any
from uuid import UUID

from llm_service.errors import Conflict

# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InjectedAnomaly:
    """One anomaly deliberately planted in the data, with where and when to find it."""

    kind: str
    channel: str | None
    start: date
    end: date
    description: str
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "kind": self.kind,
            "channel": self.channel,
            "source": self.source,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "description": self.description,
        }


@dataclass(frozen=True)
class DemoDataSummary:
    """What `generate_demo_data` wrote: rows per table, totals and the anomalies injected."""

    tenant_id: UUID
    seed: int
    start_date: date
    end_date: date
    channels: tuple[str, ...]
    attribution_events: int
    revenue_events: int
    attribution_allocations: int
    revenue_ledger: int
    revenue_state_transitions: int
    refunds: int
    chargebacks: int
    dead_events: int
    reconciliation_runs: int
    channel_assignment_corrections: int
    pii_payloads: int
    event_revenue_cents: int
    ledger_revenue_cents: int
    anomalies: tuple[InjectedAnomaly, ...]
    elapsed_seconds: float = field(default=0.0, compare=False)

    def table_counts(self) -> dict[str, int]:
        """Rows written per table."""
        return {
            "attribution_events": self.attribution_events,
            "attribution_allocations": self.attribution_allocations,
            "revenue_ledger": self.revenue_ledger,
            "revenue_state_transitions": self.revenue_state_transitions,
            "dead_events": self.dead_events,
            "reconciliation_runs": self.reconciliation_runs,
            "channel_assignment_corrections": self.channel_assignment_corrections,
        }

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for the command line)."""
        return {
            "tenant_id": str(self.tenant_id),
            "seed": self.seed,
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat(),
            "channels": list(self.channels),
            "counts": self.table_counts(),
            "revenue_events": self.revenue_events,
            "refunds": self.refunds,
            "chargebacks": self.chargebacks,
            "pii_payloads": self.pii_payloads,
            "event_revenue_cents": self.event_revenue_cents,
            "ledger_revenue_cents": self.ledger_revenue_cents,
            "anomalies": [a.as_dict() for a in self.anomalies],
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


class DemoDataExists(Conflict):
    """The tenant already holds demo data generated with this seed."""
