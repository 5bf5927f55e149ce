"""The finance page in a real headless browser (Debian's chromium): it loads, its numbers equal
the API's, the chart renders; a screenshot is kept in test-artifacts/finance.png."""

from __future__ import annotations

import asyncio
import calendar
import random
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import asyncpg
import httpx
import pytest
from finance_workload import random_workload

from llm_service.db.urls import DatabaseUrls
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.browser import (
    ARTIFACTS,
    LiveServer,
    chromium_path,
    parse_dom,
    run_chromium,
    serve_app,
)

TOKEN = "finance-page-token-9f8e7d6c5b4a"
#: A past month no other test writes to: the page shows exactly this module's tenants.
MONTH = date(2019, 5, 1)
MONTH_TEXT = "2019-05"


@pytest.fixture
def live_server(test_settings: Settings, database_urls: DatabaseUrls) -> Iterator[LiveServer]:
    """Serve the real application (as the application role) on a free local port."""
    settings = test_settings.model_copy(update={"finance_api_token": TOKEN})
    with serve_app(settings, database_urls, name="tests-finance-page") as server:
        yield server


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


def _shown_usd(text: str) -> Decimal:
    """The amount a cell shows, "$1,234.00000015" -> Decimal."""
    assert text.startswith("$"), text
    return Decimal(text[1:].replace(",", ""))


async def test_page_shows_the_apis_numbers_and_a_chart(
    live_server: LiveServer, app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool
) -> None:
    chromium = chromium_path()
    seed = random.randrange(2**32)
    print(f"finance page workload seed {seed}")
    workload = await random_workload(
        app_pool, owner_pool, MONTH, random.Random(seed), tenants=5, prefix="page"
    )
    ours = {str(w.tenant_id) for w in workload}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=live_server.base_url, timeout=30) as http:
        monthly = await http.get(f"/v1/finance/monthly-costs?month={MONTH_TEXT}", headers=auth)
        daily = await http.get(f"/v1/finance/daily-costs?month={MONTH_TEXT}", headers=auth)
    assert monthly.status_code == daily.status_code == 200
    api = monthly.json()
    api_daily = daily.json()
    assert ours <= {t["tenant_id"] for t in api["tenants"]}

    url = f"{live_server.base_url}/finance?month={MONTH_TEXT}#token={TOKEN}"
    result = await asyncio.to_thread(
        run_chromium, chromium, "--virtual-time-budget=15000", "--dump-dom", url
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = parse_dom(result.stdout)
    ready = dom.find_all(data_state="ready")
    assert [n.tag for n in ready] == ["body"], "the page did not finish loading its data"
    # The token came in the URL fragment (never sent to the server) and was removed from it.
    assert TOKEN not in result.stdout

    # The summary equals the API's month.
    total = dom.one(data_testid="month-total")
    assert total.attrs["data-value"] == api["total_cost_usd"]
    assert _shown_usd(total.text) == Decimal(api["total_cost_usd"])
    assert dom.one(data_testid="month-calls").attrs["data-value"] == str(api["calls"])
    # Cached beside uncached spend, and what caching saved, as the API has them.
    assert Decimal(api["cached_cost_usd"]) > 0 and Decimal(api["caching_saved_usd"]) > 0
    for testid, key in (
        ("month-cached", "cached_cost_usd"),
        ("month-uncached", "uncached_cost_usd"),
        ("month-saved", "caching_saved_usd"),
    ):
        shown = dom.one(data_testid=testid)
        assert shown.attrs["data-value"] == api[key]
        assert _shown_usd(shown.text) == Decimal(api[key])

    # The table: one row per tenant, most spent first, every number as the API has it.
    rows = dom.find_all(data_testid="tenant-row")
    assert [r.attrs["data-tenant-id"] for r in rows] == [t["tenant_id"] for t in api["tenants"]]
    for row, t in zip(rows, api["tenants"], strict=True):
        cells = {c.attrs["data-field"]: c for c in row.children if "data-field" in c.attrs}
        for money in ("total_cost_usd", "estimated_cost_usd", "cap_usd"):
            assert cells[money].attrs["data-value"] == t[money]
            assert _shown_usd(cells[money].text) == Decimal(t[money])
        for count in ("calls", "input_tokens", "output_tokens"):
            assert cells[count].attrs["data-value"] == str(t[count])
            assert int(cells[count].text.replace(",", "")) == t[count]
        assert cells["cap_used_fraction"].attrs["data-value"] == t["cap_used_fraction"]
        shown_percent = Decimal(cells["cap_used_fraction"].text.rstrip("%"))
        assert abs(shown_percent - Decimal(t["cap_used_fraction"]) * 100) <= Decimal("0.00005")
        assert cells["tenant_name"].attrs["data-value"] == t["tenant_name"]
        # Small costs are never shown as $0.00: every tenant made a one-token call.
        if t["tenant_id"] in ours:
            assert _shown_usd(cells["total_cost_usd"].text) > 0
        models = {
            li.attrs["data-model"]: li.attrs["data-value"]
            for li in row.find_all()
            if "data-model" in li.attrs
        }
        assert models == {m["model"]: m["cost_usd"] for m in t["by_model"]}

    # The chart: one group per day of the month, one bar per (day, model) with spend.
    days = dom.find_all(data_testid="chart-day")
    assert [d.attrs["data-day"] for d in days] == [d["day"] for d in api_daily["days"]]
    assert len(days) == calendar.monthrange(MONTH.year, MONTH.month)[1]
    bars = dom.find_all(data_testid="chart-bar")
    expected_bars = {
        (d["day"], m["model"]): m["cost_usd"] for d in api_daily["days"] for m in d["by_model"]
    }
    assert len(bars) == len(expected_bars) > 0
    assert {(b.attrs["data-day"], b.attrs["data-model"]): b.attrs["data-value"] for b in bars} == (
        expected_bars
    )
    for group, day in zip(days, api_daily["days"], strict=True):
        assert group.attrs["data-value"] == day["cost_usd"]
    # Bar heights are proportional to spend; the tallest day fills the plot.
    heights = {(b.attrs["data-day"], b.attrs["data-model"]): float(b.attrs["height"]) for b in bars}
    tallest = max(api_daily["days"], key=lambda day: Decimal(day["cost_cents"]))
    tallest_height = sum(h for (d, _), h in heights.items() if d == tallest["day"])
    assert tallest_height > 200, "the tallest day should fill the plot"
    scale = tallest_height / float(tallest["cost_cents"])
    for d in api_daily["days"]:
        for m in d["by_model"]:
            expected = float(m["cost_cents"]) * scale
            assert abs(heights[(d["day"], m["model"])] - expected) < 0.02 + expected * 1e-3
    legend = [i.attrs["data-model"] for i in dom.find_all(data_testid="legend-item")]
    assert legend == api_daily["models"]
    # Chart and table agree: the days add up to the month.
    assert Decimal(api_daily["total_cost_usd"]) == Decimal(api["total_cost_usd"])

    # The tenants nearest their caps, highest share first.
    nearest = dom.find_all(data_testid="nearest-cap")
    ranked = sorted(
        (t for t in api["tenants"] if t["cap_used_fraction"] is not None),
        key=lambda t: (-Decimal(t["cap_used_fraction"]), t["tenant_id"]),
    )[:5]
    assert [n.attrs["data-tenant-id"] for n in nearest] == [t["tenant_id"] for t in ranked]
    assert [n.attrs["data-fraction"] for n in nearest] == [t["cap_used_fraction"] for t in ranked]

    # A screenshot, kept as a test artefact.
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "finance.png"
    shot.unlink(missing_ok=True)
    result = await asyncio.to_thread(
        run_chromium,
        chromium,
        "--virtual-time-budget=15000",
        "--window-size=1400,1000",
        f"--screenshot={shot}",
        url,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000


async def test_page_without_a_token_asks_for_one(live_server: LiveServer) -> None:
    chromium = chromium_path()
    url = f"{live_server.base_url}/finance?month={MONTH_TEXT}"
    result = await asyncio.to_thread(
        run_chromium, chromium, "--virtual-time-budget=5000", "--dump-dom", url
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = parse_dom(result.stdout)
    assert dom.find_all(data_state="auth"), "the page should ask for the finance token"
    assert dom.find_all(data_testid="tenant-row") == []


async def test_page_with_a_tenant_key_shows_no_data(
    live_server: LiveServer, tenant: CreatedTenant
) -> None:
    chromium = chromium_path()
    url = f"{live_server.base_url}/finance?month={MONTH_TEXT}#token={tenant.api_key}"
    result = await asyncio.to_thread(
        run_chromium, chromium, "--virtual-time-budget=5000", "--dump-dom", url
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = parse_dom(result.stdout)
    assert dom.find_all(data_state="auth")
    assert dom.find_all(data_testid="tenant-row") == []
    assert "tenant API key cannot use the finance routes" in dom.one(data_testid="status").text
