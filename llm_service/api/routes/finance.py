"""Finance across tenants (FINANCE_API_TOKEN only): monthly and daily costs, and the page."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import HTMLResponse, Response

from llm_service.api.deps import PoolDep, SettingsDep
from llm_service.costs.service import parse_month
from llm_service.finance.auth import authorize_finance
from llm_service.finance.csv_format import finance_csv_filename, render_finance_csv
from llm_service.finance.page import PAGE_HEADERS, static_text
from llm_service.finance.service import (
    FinanceDailyCosts,
    FinanceMonthlyCosts,
    daily_costs,
    monthly_costs,
)


async def finance_caller(
    pool: PoolDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """Only the finance token passes (503 unconfigured, 403 a tenant key, 401 anything else)."""
    await authorize_finance(pool, settings.finance_api_token, authorization)


router = APIRouter(prefix="/v1/finance", tags=["finance"], dependencies=[Depends(finance_caller)])
page_router = APIRouter(tags=["finance"])
MonthQuery = Annotated[str | None, Query(description="YYYY-MM (UTC); default the current month")]


@router.get(
    "/monthly-costs",
    response_model=FinanceMonthlyCosts,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def finance_monthly_costs(
    pool: PoolDep,
    month: MonthQuery = None,
    output: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> FinanceMonthlyCosts | Response:
    """Every tenant's exact LLM spend in a month, by model and endpoint, against its cap."""
    report = await monthly_costs(pool, parse_month(month))
    if output == "csv":
        return Response(
            render_finance_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{finance_csv_filename(report)}"'
            },
        )
    return report


@router.get("/daily-costs", response_model=FinanceDailyCosts)
async def finance_daily_costs(
    pool: PoolDep,
    month: MonthQuery = None,
    # JSON only: a format it does not write is a 422, not JSON answered as if it were asked for.
    _output: Annotated[str, Query(alias="format", pattern="^json$")] = "json",
) -> FinanceDailyCosts:
    """Settled spend per UTC day of a month, by model, across tenants."""
    return await daily_costs(pool, parse_month(month))


@page_router.get("/finance", response_class=HTMLResponse)
async def finance_page() -> HTMLResponse:
    """The finance page (its data is fetched with the finance token)."""
    return HTMLResponse(static_text("finance.html"), headers=PAGE_HEADERS)


@page_router.get("/finance/finance.js", include_in_schema=False)
async def finance_script() -> Response:
    """The finance page's script."""
    return Response(
        static_text("finance.js"), media_type="text/javascript; charset=utf-8", headers=PAGE_HEADERS
    )
