"""The analyst's workbench page: ask, watch a run think, check every claim (tenant API key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from llm_service.investigations.page import ASSETS, PAGE_HEADERS, static_text

router = APIRouter(tags=["investigations"])


@router.get("/investigations", response_class=HTMLResponse)
async def workbench_page() -> HTMLResponse:
    """The workbench page (its data is fetched with the tenant's API key)."""
    return HTMLResponse(static_text("workbench.html"), headers=PAGE_HEADERS)


@router.get("/investigations/workbench.js", include_in_schema=False)
async def workbench_script() -> Response:
    """The workbench's script."""
    return _asset("workbench.js")


@router.get("/investigations/workbench-evidence.js", include_in_schema=False)
async def workbench_evidence_script() -> Response:
    """The workbench's evidence views (tables and charts of cited tool calls)."""
    return _asset("workbench-evidence.js")


@router.get("/investigations/workbench.css", include_in_schema=False)
async def workbench_style() -> Response:
    """The workbench's style sheet."""
    return _asset("workbench.css")


def _asset(name: str) -> Response:
    return Response(static_text(name), media_type=ASSETS[name], headers=PAGE_HEADERS)
