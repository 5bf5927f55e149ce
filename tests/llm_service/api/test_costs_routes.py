"""GET /v1/costs/monthly over HTTP: exact JSON, CSV that agrees with it, errors, isolation."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from budgets.estimate import actual_cost
from llm_service.tenants.service import CreatedTenant
from tests.helpers.cost_workload import GPT_4O_MINI, MODELS, MONTH, random_workload, run_call


def _auth(tenant: CreatedTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


async def _monthly(
    client: httpx.AsyncClient, tenant: CreatedTenant, **params: str
) -> httpx.Response:
    return await client.get("/v1/costs/monthly", params=params, headers=_auth(tenant))


def _amounts(value: Any) -> list[Any]:
    """Every amount-like field anywhere in a JSON body."""
    found: list[Any] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith(("_usd", "_cents", "_fraction")):
                found.append(item)
            found += _amounts(item)
    elif isinstance(value, list):
        for item in value:
            found += _amounts(item)
    return found


async def test_json_equals_sum_of_calls_exactly(
    client: httpx.AsyncClient, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    seed = random.randrange(2**32)
    print(f"workload seed {seed}")
    calls = await random_workload(app_pool, tenant.tenant_id, random.Random(seed))
    response = await _monthly(client, tenant, month=f"{MONTH:%Y-%m}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()

    # Amounts travel as exact decimal strings, never as JSON numbers (floats).
    assert all(isinstance(a, str) for a in _amounts(body) if a is not None)
    floats: list[str] = []
    json.loads(response.text, parse_float=floats.append)
    assert floats == []  # no JSON number with a fraction anywhere in the body
    total = sum((c.cost_cents for c in calls), Decimal(0))
    assert Decimal(body["total_cost_cents"]) == total
    assert len(body["total_cost_cents"].split(".")[1]) == 10  # the ledger's full scale
    assert Decimal(body["total_cost_usd"]) == total.scaleb(-2)
    assert Decimal(body["estimated_cost_cents"]) == sum(c.cost_cents for c in calls if c.estimate)
    assert body["calls"] == len(calls)
    assert body["input_tokens"] == sum(c.input_tokens for c in calls)
    assert body["output_tokens"] == sum(c.output_tokens for c in calls)
    assert body["tenant_id"] == str(tenant.tenant_id)
    assert body["month"] == f"{MONTH:%Y-%m}"

    by_model: dict[str, Decimal] = defaultdict(Decimal)
    by_endpoint: dict[str, Decimal] = defaultdict(Decimal)
    for call in calls:
        by_model[call.model] += call.cost_cents
        by_endpoint[call.endpoint] += call.cost_cents
    assert {m["model"]: Decimal(m["cost_cents"]) for m in body["by_model"]} == by_model
    assert {e["endpoint"]: Decimal(e["cost_cents"]) for e in body["by_endpoint"]} == by_endpoint
    assert sum(Decimal(d["cost_usd"]) for d in body["daily"]) == total.scaleb(-2)


async def test_one_token_call_is_exact_in_json(
    client: httpx.AsyncClient, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    cost = actual_cost(GPT_4O_MINI, 1, 0)
    await run_call(app_pool, tenant.tenant_id, MODELS[0], "explanations", cost, input_tokens=1)
    body = (await _monthly(client, tenant)).json()  # default: the current UTC month
    assert body["month"] == f"{MONTH:%Y-%m}"
    assert body["total_cost_usd"] == "0.00000015"
    assert body["total_cost_cents"] == "0.0000150000"
    assert body["by_model"] == [
        {
            "model": "openai/gpt-4o-mini",
            "calls": 1,
            "input_tokens": 1,
            "output_tokens": 0,
            "cost_usd": "0.00000015",
            "cost_cents": "0.0000150000",
        }
    ]


async def test_csv_agrees_with_json(
    client: httpx.AsyncClient, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    await random_workload(app_pool, tenant.tenant_id, random.Random(7))
    month = f"{MONTH:%Y-%m}"
    body = (await _monthly(client, tenant, month=month)).json()
    response = await _monthly(client, tenant, month=month, format="csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="llm-costs-{month}.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    for row in rows:
        assert row["month"] == month
        assert row["tenant_id"] == str(tenant.tenant_id)

    def lines(key: str, items: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
        fields = ("calls", "input_tokens", "output_tokens", "cost_usd", "cost_cents")
        return {i[key]: tuple(str(i[f]) for f in fields) for i in items}

    def csv_lines(kind: str) -> dict[str, tuple[str, ...]]:
        fields = ("calls", "input_tokens", "output_tokens", "cost_usd", "cost_cents")
        return {r["name"]: tuple(r[f] for f in fields) for r in rows if r["kind"] == kind}

    assert csv_lines("model") == lines("model", body["by_model"])
    assert csv_lines("endpoint") == lines("endpoint", body["by_endpoint"])
    (total,) = [r for r in rows if r["kind"] == "total"]
    assert rows[-1] is total
    assert (total["cost_usd"], total["cost_cents"]) == (
        body["total_cost_usd"],
        body["total_cost_cents"],
    )
    assert (int(total["calls"]), int(total["input_tokens"]), int(total["output_tokens"])) == (
        body["calls"],
        body["input_tokens"],
        body["output_tokens"],
    )
    assert sum(Decimal(r["cost_cents"]) for r in rows if r["kind"] == "model") == Decimal(
        total["cost_cents"]
    )


async def test_csv_of_empty_month_has_a_zero_total(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    response = await _monthly(client, tenant, month="2001-02", format="csv")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:4] == ["month", "tenant_id", "kind", "name"]
    assert rows[1:] == [
        ["2001-02", str(tenant.tenant_id), "total", "", "0", "0", "0", "0", "0.0000000000"]
    ]


@pytest.mark.parametrize("month", ["2025-13", "25-01", "", "2025-1", "january", "2025-01-01"])
async def test_bad_month_is_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, month: str
) -> None:
    response = await _monthly(client, tenant, month=month)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert "YYYY-MM" in error["message"]


@pytest.mark.parametrize("output", ["xml", "JSON", "", "csv;"])
async def test_bad_format_is_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, output: str
) -> None:
    response = await _monthly(client, tenant, format=output)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer lsk_not-a-real-key"}, {"Authorization": "Basic x"}]
)
async def test_without_valid_key_is_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for params in ({}, {"format": "csv"}, {"month": "2025-13"}):
        response = await client.get("/v1/costs/monthly", params=params, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


async def test_tenant_cannot_see_another_tenants_costs(
    client: httpx.AsyncClient,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    await random_workload(app_pool, tenant.tenant_id, random.Random(11))
    await run_call(app_pool, other_tenant.tenant_id, MODELS[2], "embeddings", Decimal("0.000002"))
    theirs = (await _monthly(client, other_tenant)).json()
    assert theirs["tenant_id"] == str(other_tenant.tenant_id)
    assert theirs["calls"] == 1
    assert theirs["total_cost_cents"] == "0.0002000000"
    assert [m["model"] for m in theirs["by_model"]] == [MODELS[2]]
    assert [e["endpoint"] for e in theirs["by_endpoint"]] == ["embeddings"]
    assert str(tenant.tenant_id) not in (await _monthly(client, other_tenant, format="csv")).text
    mine = (await _monthly(client, tenant)).json()
    assert mine["calls"] > 1
    assert Decimal(mine["total_cost_cents"]) > 0
