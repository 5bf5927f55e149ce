"""Reconciliation: every monthly row against the sum of its settled calls, across tenants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from uuid import UUID

import asyncpg

from llm_service.costs import ledger_repository, repository
from llm_service.costs.service import cents_text, month_label


@dataclass(frozen=True)
class ReconcileRow:
    """One tenant and month: what `llm_monthly_costs` records and what its calls add up to."""

    tenant_id: UUID
    month: date
    recorded_cost_cents: Decimal
    computed_cost_cents: Decimal
    recorded_calls: int
    computed_calls: int
    breakdowns_match: bool

    @property
    def difference_cents(self) -> Decimal:
        """recorded - computed, exactly."""
        return self.recorded_cost_cents - self.computed_cost_cents

    @property
    def matches(self) -> bool:
        """Total, call count and both breakdowns all agree with the calls."""
        return (
            self.difference_cents == 0
            and self.recorded_calls == self.computed_calls
            and self.breakdowns_match
        )


@dataclass(frozen=True)
class ReconcileReport:
    """The result of one reconciliation."""

    month: date | None
    swept: int
    rows: list[ReconcileRow]

    @property
    def differences(self) -> list[ReconcileRow]:
        """The rows that do not match their calls."""
        return [row for row in self.rows if not row.matches]

    @property
    def ok(self) -> bool:
        """No monthly row differs from its calls."""
        return not self.differences


async def reconcile(conn: asyncpg.Connection, month: date | None) -> ReconcileReport:
    """Sweep expired reservations, then compare every monthly row (of `month`, or all) to its calls.

    Runs as the application role: both steps go through narrow SECURITY DEFINER functions.
    Expired reservations of crashed processes are settled first so their spend is counted.
    """
    swept = await ledger_repository.sweep_expired_reservations(conn)
    rows = [
        ReconcileRow(
            tenant_id=r["tenant_id"],
            month=r["month"],
            recorded_cost_cents=r["recorded_cost_cents"],
            computed_cost_cents=r["computed_cost_cents"],
            recorded_calls=r["recorded_calls"],
            computed_calls=r["computed_calls"],
            breakdowns_match=r["breakdowns_match"],
        )
        for r in await repository.reconcile_rows(conn, month)
    ]
    return ReconcileReport(month=month, swept=swept, rows=rows)


def _signed_cents(value: Decimal) -> str:
    return ("+" if value > 0 else "") + cents_text(value)


def render(report: ReconcileReport) -> str:
    """A readable table of every row, differing rows flagged, and the count of differences."""
    header = (
        *("tenant", "month", "recorded_cents", "computed_cents", "difference_cents"),
        *("calls_recorded", "calls_computed", "breakdowns_match", ""),
    )
    table = [header] + [
        (
            str(row.tenant_id),
            month_label(row.month),
            cents_text(row.recorded_cost_cents),
            cents_text(row.computed_cost_cents),
            _signed_cents(row.difference_cents),
            str(row.recorded_calls),
            str(row.computed_calls),
            "yes" if row.breakdowns_match else "NO",
            "" if row.matches else "DIFFERENCE",
        )
        for row in report.rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    scope = month_label(report.month) if report.month else "all months"
    n = len(report.differences)
    lines.append("")
    lines.append(
        f"{len(report.rows)} monthly rows checked ({scope}); "
        f"{report.swept} expired reservations settled first"
    )
    lines.append(f"{n} difference{'' if n == 1 else 's'}")
    return "\n".join(lines)
