"""A tenant's LLM costs per month, as JSON or CSV."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from llm_service.api.deps import PoolDep, TenantDep
from llm_service.costs.csv_format import csv_filename, render_csv
from llm_service.costs.service import MonthlyCostReport, monthly_report, parse_month

router = APIRouter(prefix="/v1/costs", tags=["costs"])


@router.get(
    "/monthly",
    response_model=MonthlyCostReport,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def monthly_costs(
    pool: PoolDep,
    tenant_id: TenantDep,
    month: Annotated[
        str | None, Query(description="YYYY-MM (UTC); default the current month")
    ] = None,
    output: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> MonthlyCostReport | Response:
    """The calling tenant's exact LLM spend in a month, by model, endpoint and day."""
    report = await monthly_report(pool, tenant_id, parse_month(month))
    if output == "csv":
        return Response(
            render_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{csv_filename(report)}"'},
        )
    return report
