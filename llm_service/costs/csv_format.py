"""The monthly report as CSV: one row per model, endpoint and kind of token, then totals.

A `token` row holds one kind of token as billed (its count in the input or output column); the
`caching_saved` row what the cached tokens would have cost more at the base rate.
"""

from __future__ import annotations

import csv
import io
from typing import Final

from llm_service.costs.service import CostLine, MonthlyCostReport

CSV_COLUMNS: Final = (
    "month",
    "tenant_id",
    "kind",
    "name",
    "calls",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cost_cents",
)
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def _safe(text: str) -> str:
    """Neutralise a cell a spreadsheet would run as a formula."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_filename(report: MonthlyCostReport) -> str:
    """The download name of a report, e.g. llm-costs-2025-01.csv."""
    return f"llm-costs-{report.month}.csv"


def render_csv(report: MonthlyCostReport) -> str:
    """CSV text of a report; amounts are the report's exact decimal strings."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    head = (report.month, str(report.tenant_id))
    lines: list[tuple[str, str, CostLine]] = [("model", m.model, m) for m in report.by_model]
    lines += [("endpoint", e.endpoint, e) for e in report.by_endpoint]
    for kind, name, line in lines:
        writer.writerow(
            (
                *head,
                kind,
                _safe(name),
                line.calls,
                line.input_tokens,
                line.output_tokens,
                line.cost_usd,
                line.cost_cents,
            )
        )
    for token in report.by_kind:
        is_input = token.direction == "input"
        writer.writerow(
            (
                *head,
                "token",
                token.kind,
                "",
                token.tokens if is_input else "",
                "" if is_input else token.tokens,
                token.cost_usd,
                token.cost_cents,
            )
        )
    if report.by_kind:
        writer.writerow(
            (*head, "caching_saved", "", "", "", "", report.caching_saved_usd,
             report.caching_saved_cents)
        )  # fmt: skip
    writer.writerow(
        (
            *head,
            "total",
            "",
            report.calls,
            report.input_tokens,
            report.output_tokens,
            report.total_cost_usd,
            report.total_cost_cents,
        )
    )
    return out.getvalue()
