"""Finance over HTTP: only the finance token, exact JSON, CSV and daily figures that agree with
each other, with the calls written and with `costs reconcile`."""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from uuid import UUID

import asyncpg
import httpx
import pytest
from finance_workload import TenantWorkload, random_workload

from llm_service.api.app import create_app
from llm_service.costs.reconcile import reconcile
from llm_service.costs.service import cents_text, fraction_text, usd_text
from llm_service.finance.csv_format import FINANCE_CSV_COLUMNS
from llm_service.settings import Settings
from llm_service.tenants.keys import new_api_key
from llm_service.tenants.service import CreatedTenant
from tests.helpers.cli import RunCli

TOKEN = "finance-test-token-0123456789abcdef"
#: A past month no other test writes to, so its totals are this module's alone.
MONTH = date(2019, 3, 1)
MONTH_TEXT = "2019-03"
FINANCE_ROUTES = ("/v1/finance/monthly-costs", "/v1/finance/daily-costs")


@pytest.fixture
async def finance_client(
    test_settings: Settings, app_pool: asyncpg.Pool
) -> AsyncIterator[httpx.AsyncClient]:
    """The application with FINANCE_API_TOKEN configured, over ASGI."""
    app = create_app(test_settings.model_copy(update={"finance_api_token": TOKEN}), pool=app_pool)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
async def unconfigured_client(
    test_settings: Settings, app_pool: asyncpg.Pool
) -> AsyncIterator[httpx.AsyncClient]:
    """The application with no FINANCE_API_TOKEN."""
    app = create_app(test_settings.model_copy(update={"finance_api_token": None}), pool=app_pool)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def seed() -> int:
    """One random seed per module run, printed so a failure can be replayed."""
    value = random.randrange(2**32)
    print(f"finance workload seed {value}")
    return value


@pytest.fixture
async def workload(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, seed: int
) -> list[TenantWorkload]:
    """Four tenants with random calls in MONTH."""
    return await random_workload(app_pool, owner_pool, MONTH, random.Random(seed), prefix="fin")


# --------------------------------------------------------------------------------------------
# Who may read
# --------------------------------------------------------------------------------------------


def test_every_finance_route_is_covered_here(test_settings: Settings) -> None:
    paths = {p for p in create_app(test_settings).openapi()["paths"] if p.startswith("/v1/finance")}
    assert paths == set(FINANCE_ROUTES)


@pytest.mark.parametrize("path", FINANCE_ROUTES)
async def test_tenant_key_gets_403_on_every_finance_route(
    finance_client: httpx.AsyncClient, tenant: CreatedTenant, path: str
) -> None:
    for query in ("", "?month=2019-03", "?month=2019-03&format=csv"):
        response = await finance_client.get(path + query, headers=_bearer(tenant.api_key))
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"
        assert str(tenant.tenant_id) not in response.text


@pytest.mark.parametrize("path", FINANCE_ROUTES)
async def test_missing_or_wrong_credentials_get_401(
    finance_client: httpx.AsyncClient, path: str
) -> None:
    attempts: list[dict[str, str]] = [
        {},
        _bearer(TOKEN + "x"),
        _bearer(TOKEN[:-1]),
        _bearer(""),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        _bearer(new_api_key()),  # well-formed, but no tenant has it
    ]
    for headers in attempts:
        response = await finance_client.get(path, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
    # The token is a header credential only, never a query parameter.
    assert (await finance_client.get(f"{path}?token={TOKEN}")).status_code == 401


@pytest.mark.parametrize("path", FINANCE_ROUTES)
async def test_unconfigured_finance_answers_503(
    unconfigured_client: httpx.AsyncClient, tenant: CreatedTenant, path: str
) -> None:
    for headers in ({}, _bearer(TOKEN), _bearer(tenant.api_key)):
        response = await unconfigured_client.get(path, headers=headers)
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "finance access is not configured"


async def test_the_finance_token_is_refused_by_tenant_routes(
    finance_client: httpx.AsyncClient,
) -> None:
    response = await finance_client.get("/v1/costs/monthly", headers=_bearer(TOKEN))
    assert response.status_code == 401


@pytest.mark.parametrize("month", ["2019-13", "2019-3", "19-03", "march", "2019-00"])
async def test_malformed_month_is_422(finance_client: httpx.AsyncClient, month: str) -> None:
    for path in FINANCE_ROUTES:
        response = await finance_client.get(path, params={"month": month}, headers=_bearer(TOKEN))
        assert response.status_code == 422, response.text


@pytest.mark.parametrize("output", ["csv", "xml", "JSON"])
async def test_a_format_daily_costs_does_not_write_is_422_not_json(
    finance_client: httpx.AsyncClient, output: str
) -> None:
    """A new user's daily-costs?format=csv answered JSON as if it had been asked for."""
    response = await finance_client.get(
        "/v1/finance/daily-costs", params={"month": MONTH_TEXT, "format": output},
        headers=_bearer(TOKEN),
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "query.format"
    plain = await finance_client.get(
        "/v1/finance/daily-costs", params={"month": MONTH_TEXT, "format": "json"},
        headers=_bearer(TOKEN),
    )  # fmt: skip
    assert plain.status_code == 200


async def test_the_page_is_a_shell_without_data(
    finance_client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    page = await finance_client.get("/finance", headers=_bearer(tenant.api_key))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'type="month"' in page.text and "finance/finance.js" in page.text
    assert str(tenant.tenant_id) not in page.text
    # Nothing is loaded from anywhere but the service itself.
    assert "http://" not in page.text and "https://" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    script = await finance_client.get("/finance/finance.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "http://" not in script.text.replace("http://www.w3.org/2000/svg", "")


async def test_finance_functions_are_narrow_definers(app_pool: asyncpg.Pool) -> None:
    async with app_pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT p.proname, p.prosecdef, pg_get_userbyid(p.proowner) AS owner,
                      has_function_privilege('llm_app', p.oid, 'EXECUTE') AS app_can,
                      has_function_privilege('public', p.oid, 'EXECUTE') AS public_can
               FROM pg_proc p WHERE p.proname LIKE 'fn_finance_%' ORDER BY 1"""
        )
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await conn.fetch("SELECT * FROM fn_finance_monthly_costs('2019-03-02')")
    assert [r["proname"] for r in rows] == ["fn_finance_daily_costs", "fn_finance_monthly_costs"]
    for r in rows:
        assert (r["prosecdef"], r["owner"], r["app_can"], r["public_can"]) == (
            True,
            "llm_crosstenant",
            True,
            False,
        )


# --------------------------------------------------------------------------------------------
# What finance reads
# --------------------------------------------------------------------------------------------


def _expected_breakdown(w: TenantWorkload, attribute: str) -> dict[str, dict[str, object]]:
    return {
        key: {
            "calls": e["calls"],
            "input_tokens": e["input_tokens"],
            "output_tokens": e["output_tokens"],
            "cost_usd": usd_text(e["cost"]),
            "cost_cents": cents_text(e["cost"]),
        }
        for key, e in w.by(attribute).items()
    }


def _breakdown(lines: list[dict[str, object]], key: str) -> dict[str, dict[str, object]]:
    return {str(line[key]): {k: v for k, v in line.items() if k != key} for line in lines}


async def test_json_csv_daily_and_reconcile_agree_on_a_random_workload(
    finance_client: httpx.AsyncClient,
    app_pool: asyncpg.Pool,
    workload: list[TenantWorkload],
    run_cli: RunCli,
) -> None:
    ours = {w.tenant_id: w for w in workload}
    monthly = await finance_client.get(
        "/v1/finance/monthly-costs", params={"month": MONTH_TEXT}, headers=_bearer(TOKEN)
    )
    assert monthly.status_code == 200, monthly.text
    report = monthly.json()
    assert report["month"] == MONTH_TEXT and report["currency"] == "USD"
    tenants = {UUID(t["tenant_id"]): t for t in report["tenants"]}
    assert set(ours) <= set(tenants)

    # 1. JSON = the calls the test wrote, exactly (money as exact strings, never floats).
    for tenant_id, w in ours.items():
        t = tenants[tenant_id]
        assert t["tenant_name"] == w.name
        assert t["total_cost_cents"] == cents_text(w.total_cents)
        assert t["total_cost_usd"] == usd_text(w.total_cents)
        assert t["estimated_cost_cents"] == cents_text(w.estimated_cents)
        assert t["calls"] == len(w.calls)
        assert t["input_tokens"] == sum(c.input_tokens for c in w.calls)
        assert t["output_tokens"] == sum(c.output_tokens for c in w.calls)
        assert _breakdown(t["by_model"], "model") == _expected_breakdown(w, "model")
        assert _breakdown(t["by_endpoint"], "endpoint") == _expected_breakdown(w, "endpoint")
        assert t["cap_cents"] == cents_text(w.cap_cents)
        assert t["cap_used_fraction"] == fraction_text(w.total_cents, w.cap_cents)
        assert Decimal(t["cap_used_fraction"]) <= 1
        for value in (t["total_cost_usd"], t["total_cost_cents"], t["cap_used_fraction"]):
            assert isinstance(value, str)
    # The month's totals are the exact sums of the tenants listed, most spent first.
    assert report["tenant_count"] == len(report["tenants"])
    assert Decimal(report["total_cost_cents"]) == sum(
        Decimal(t["total_cost_cents"]) for t in report["tenants"]
    )
    assert report["calls"] == sum(t["calls"] for t in report["tenants"])
    spends = [Decimal(t["total_cost_cents"]) for t in report["tenants"]]
    assert spends == sorted(spends, reverse=True)

    # 2. CSV = JSON: every tenant's model, endpoint and total rows, plus one all-tenants row.
    response = await finance_client.get(
        "/v1/finance/monthly-costs",
        params={"month": MONTH_TEXT, "format": "csv"},
        headers=_bearer(TOKEN),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert f"llm-costs-all-tenants-{MONTH_TEXT}.csv" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert tuple(rows[0].keys()) == FINANCE_CSV_COLUMNS
    by_tenant: defaultdict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_tenant[row["tenant_id"]].append(row)
    for tenant_id in ours:
        t = tenants[tenant_id]
        lines = by_tenant[str(tenant_id)]
        total = [r for r in lines if r["kind"] == "total"]
        assert len(total) == 1
        assert total[0]["cost_cents"] == t["total_cost_cents"]
        assert total[0]["cost_usd"] == t["total_cost_usd"]
        assert total[0]["tenant_name"] == t["tenant_name"]
        assert int(total[0]["calls"]) == t["calls"]
        assert total[0]["cap_cents"] == t["cap_cents"]
        assert total[0]["cap_used_fraction"] == t["cap_used_fraction"]
        for kind, key, lines_json in (
            ("model", "model", t["by_model"]),
            ("endpoint", "endpoint", t["by_endpoint"]),
        ):
            csv_lines = {r["name"]: r for r in lines if r["kind"] == kind}
            assert set(csv_lines) == {line[key] for line in lines_json}
            for line in lines_json:
                got = csv_lines[line[key]]
                assert (got["cost_cents"], got["cost_usd"], int(got["calls"])) == (
                    line["cost_cents"],
                    line["cost_usd"],
                    line["calls"],
                )
    (all_row,) = [r for r in rows if r["kind"] == "all_tenants"]
    assert all_row["cost_cents"] == report["total_cost_cents"]

    # 3. Daily = the calls, per tenant, day and model; each day = the sum of its rows.
    response = await finance_client.get(
        "/v1/finance/daily-costs", params={"month": MONTH_TEXT}, headers=_bearer(TOKEN)
    )
    assert response.status_code == 200
    daily = response.json()
    assert len(daily["days"]) == 31
    assert [d["day"] for d in daily["days"]] == [f"2019-03-{i:02d}" for i in range(1, 32)]
    for tenant_id, w in ours.items():
        got = {
            (date.fromisoformat(r["day"]), r["model"]): (Decimal(r["cost_cents"]), r["calls"])
            for r in daily["rows"]
            if r["tenant_id"] == str(tenant_id)
        }
        assert got == w.daily()
        # The days add up to the month the roll-up recorded.
        assert sum(cost for cost, _ in got.values()) == Decimal(
            tenants[tenant_id]["total_cost_cents"]
        )
    per_day: defaultdict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for r in daily["rows"]:
        per_day[(r["day"], r["model"])] += Decimal(r["cost_cents"])
    for day in daily["days"]:
        assert Decimal(day["cost_cents"]) == sum(Decimal(m["cost_cents"]) for m in day["by_model"])
        for m in day["by_model"]:
            assert Decimal(m["cost_cents"]) == per_day[(day["day"], m["model"])]
    assert Decimal(daily["total_cost_cents"]) == sum(per_day.values())
    assert Decimal(daily["total_cost_cents"]) == Decimal(report["total_cost_cents"])

    # 4. Reconcile (the function, and the CLI finance would run) = the same totals, no difference.
    async with app_pool.acquire() as conn, conn.transaction():
        reconciled = await reconcile(conn, MONTH)
    rows_by_tenant = {r.tenant_id: r for r in reconciled.rows if r.tenant_id in ours}
    assert set(rows_by_tenant) == set(ours)
    for tenant_id, row in rows_by_tenant.items():
        assert row.matches
        assert cents_text(row.recorded_cost_cents) == tenants[tenant_id]["total_cost_cents"]
        assert row.recorded_calls == tenants[tenant_id]["calls"]
    code, out = await run_cli("costs", "reconcile", "--month", MONTH_TEXT)
    for tenant_id in ours:
        (line,) = [ln for ln in out.splitlines() if ln.startswith(str(tenant_id))]
        cells = line.split()
        assert cells[1] == MONTH_TEXT
        assert cells[2] == cells[3] == tenants[tenant_id]["total_cost_cents"]
        assert cells[4] == "0.0000000000"
        assert "DIFFERENCE" not in line
    assert code == 0, out


async def test_a_month_without_calls_lists_existing_tenants_at_zero(
    finance_client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    response = await finance_client.get(
        "/v1/finance/monthly-costs", params={"month": "2099-01"}, headers=_bearer(TOKEN)
    )
    assert response.status_code == 200
    mine = [t for t in response.json()["tenants"] if t["tenant_id"] == str(tenant.tenant_id)]
    assert len(mine) == 1
    assert mine[0]["total_cost_usd"] == "0" and mine[0]["calls"] == 0
    assert mine[0]["by_model"] == [] and mine[0]["cap_used_fraction"] == "0"
    # A month before the tenant existed does not list it.
    response = await finance_client.get(
        "/v1/finance/monthly-costs", params={"month": "2001-01"}, headers=_bearer(TOKEN)
    )
    assert str(tenant.tenant_id) not in response.text
