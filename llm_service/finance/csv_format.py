"""The finance month as CSV: each tenant's rows as in its own CSV, plus its name and cap."""

from __future__ import annotations

import csv
import io
from typing import Final

from llm_service.costs.csv_format import CSV_COLUMNS, _safe, render_csv
from llm_service.costs.service import MonthlyCostReport, cents_text
from llm_service.finance.service import ZERO, FinanceMonthlyCosts, TenantMonthCosts

FINANCE_CSV_COLUMNS: Final = (
    *CSV_COLUMNS[:2],
    "tenant_name",
    *CSV_COLUMNS[2:],
    "cap_usd",
    "cap_cents",
    "cap_used_fraction",
)


def finance_csv_filename(report: FinanceMonthlyCosts) -> str:
    """The download name, e.g. llm-costs-all-tenants-2025-01.csv."""
    return f"llm-costs-all-tenants-{report.month}.csv"


def _as_tenant_report(month: str, tenant: TenantMonthCosts) -> MonthlyCostReport:
    return MonthlyCostReport(
        month=month,
        reserved_usd="0",
        reserved_cents=cents_text(ZERO),
        daily=[],
        **tenant.model_dump(exclude={"tenant_name"}),
    )


def _tenant_rows(month: str, tenant: TenantMonthCosts) -> list[list[str]]:
    """A tenant's rows exactly as its own CSV has them, with name and (on the total) the cap."""
    rows = list(csv.reader(io.StringIO(render_csv(_as_tenant_report(month, tenant)))))[1:]
    cap = [tenant.cap_usd, tenant.cap_cents, tenant.cap_used_fraction or ""]
    return [
        [
            *row[:2],
            _safe(tenant.tenant_name),
            *row[2:],
            *(cap if row[2] == "total" else ["", "", ""]),
        ]
        for row in rows
    ]


def render_finance_csv(report: FinanceMonthlyCosts) -> str:
    """CSV of every tenant's month, then one all_tenants row; amounts are exact strings."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(FINANCE_CSV_COLUMNS)
    for tenant in report.tenants:
        writer.writerows(_tenant_rows(report.month, tenant))
    writer.writerow(
        (
            report.month,
            "",
            "",
            "all_tenants",
            "",
            report.calls,
            report.input_tokens,
            report.output_tokens,
            report.total_cost_usd,
            report.total_cost_cents,
            "",
            "",
            "",
        )
    )
    return out.getvalue()
