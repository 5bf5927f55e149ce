"""Attacks on the free text and the dates of every POST: blank text and the calendar's edges.

A question of nothing but (Unicode) whitespace or invisible characters must be a 422 before the
database sees it, never a CHECK violation (500); a period at the calendar's edges (year 1,
9999-12-31) must be a 422, never an OverflowError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from llm_service.api.app import create_app
from llm_service.db.pool import tenant_transaction
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant

BLANKS = [
    "   ",
    "\t\n\r",
    "\u00a0\u00a0\u00a0",  # no-break space
    "\u3000\u3000\u3000",  # ideographic space
    "\u200b\u200b\u200b",  # zero-width space
    "\ufeff\ufeff\ufeff",  # byte order mark
    "\u2028\u2029\u202f\u205f\u2060\u180e\u00ad",  # separators, narrow NBSP, joiners, soft hyphen
    "\u200c\u200d\u200e\u200f\u3164\u2800\u115f",  # ZWNJ/ZWJ, bidi marks, Hangul filler, Braille
    " \u00a0\t\u200b\ufeff\u3000\n ",
]
ABSURD_PERIODS = [
    {"start": "0001-01-01", "end": "0001-01-08"},
    {"start": "9999-12-24", "end": "9999-12-31"},
    {"start": "1900-01-01", "end": "1900-01-08"},
]


def _auth(tenant: CreatedTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


def _assert_422(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "validation_error"
    assert "Traceback" not in error["message"]
    return error


@pytest.fixture(autouse=True)
async def _nothing_queued_stays(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> AsyncIterator[None]:
    """Anything a failed attack did queue is ended, so no other test's worker runs it."""
    yield
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        for table in ("investigations", "budget_optimization_jobs"):
            await conn.execute(
                f"UPDATE {table} SET status = 'cancelled', reason = 'test cleanup', "
                "finished_at = now() WHERE status = 'queued'"
            )


async def _count(pool: asyncpg.Pool, tenant: CreatedTenant, table: str) -> int:
    async with tenant_transaction(pool, tenant.tenant_id) as conn:
        # The owner pool may bypass RLS: count this tenant's rows, not every tenant's.
        count: int = await conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant.tenant_id
        )
    return count


@pytest.mark.parametrize("question", BLANKS)
async def test_a_blank_investigation_question_is_422_and_queues_nothing(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, tenant: CreatedTenant, question: str
) -> None:
    response = await client.post(
        "/v1/investigations", json={"question": question}, headers=_auth(tenant)
    )
    error = _assert_422(response)
    assert "blank" in json.dumps(error)
    assert await _count(owner_pool, tenant, "investigations") == 0


async def test_a_question_with_blank_padding_is_kept_trimmed(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    response = await client.post(
        "/v1/investigations",
        json={"question": "\u200b\u00a0 Why did email revenue fall?\u3000\ufeff"},
        headers=_auth(tenant),
    )
    assert response.status_code == 202
    assert response.json()["question"] == "Why did email revenue fall?"


@pytest.mark.parametrize("question", ["", *BLANKS])
async def test_a_blank_explanation_question_is_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, question: str
) -> None:
    body = {"subject": "channel_performance", "period": "last week", "question": question}
    error = _assert_422(await client.post("/v1/explanations", json=body, headers=_auth(tenant)))
    assert "blank" in json.dumps(error)


@pytest.mark.parametrize("phrase", ["\u00a0", "\u200b", "\u3000\t", "\ufeff"])
async def test_a_blank_period_phrase_is_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, phrase: str
) -> None:
    body = {"subject": "channel_performance", "period": phrase}
    _assert_422(await client.post("/v1/explanations", json=body, headers=_auth(tenant)))


@pytest.mark.parametrize("subject", ["channel_performance", "period_change"])
@pytest.mark.parametrize("period", ABSURD_PERIODS)
async def test_an_explanation_of_a_period_at_the_calendars_edge_is_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, subject: str, period: dict[str, str]
) -> None:
    body = {"subject": subject, "period": period}
    error = _assert_422(await client.post("/v1/explanations", json=body, headers=_auth(tenant)))
    assert "between 1970-01-01 and 2100-01-01" in json.dumps(error)


@pytest.mark.parametrize(
    "phrase",
    ["0001-01-01 to 0001-01-08", "9999-12-24 to 9999-12-31", "from 0001-01-01 to 0001-12-01"],
)
async def test_an_explanation_phrase_at_the_calendars_edge_is_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, phrase: str
) -> None:
    body = {"subject": "period_change", "period": phrase}
    _assert_422(await client.post("/v1/explanations", json=body, headers=_auth(tenant)))


async def test_a_comparison_at_the_calendars_edge_is_422(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    body = {
        "subject": "period_change",
        "period": {"start": "2026-01-01", "end": "2026-01-08"},
        "comparison": {"start": "0001-01-01", "end": "0001-01-08"},
    }
    _assert_422(await client.post("/v1/explanations", json=body, headers=_auth(tenant)))


async def test_the_default_comparison_before_the_earliest_date_is_422(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    body = {"subject": "period_change", "period": {"start": "1970-01-01", "end": "1970-01-08"}}
    error = _assert_422(await client.post("/v1/explanations", json=body, headers=_auth(tenant)))
    assert "comparison" in error["message"]


@pytest.mark.parametrize("period", ABSURD_PERIODS)
async def test_a_budget_optimisation_at_the_calendars_edge_is_422(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, tenant: CreatedTenant,
    period: dict[str, str],
) -> None:  # fmt: skip
    body = {"total_budget_usd": "1000.00", "period": period}
    response = await client.post("/v1/budget-optimizations", json=body, headers=_auth(tenant))
    _assert_422(response)
    assert await _count(owner_pool, tenant, "budget_optimization_jobs") == 0


@pytest.mark.parametrize("month", ["0001-01", "9999-12", "0000-01"])
async def test_a_cost_month_at_the_calendars_edge_is_never_a_500(
    client: httpx.AsyncClient, test_settings: Settings, app_pool: asyncpg.Pool,
    tenant: CreatedTenant, month: str,
) -> None:  # fmt: skip
    finance = create_app(
        test_settings.model_copy(update={"finance_api_token": "t" * 32}), pool=app_pool
    )
    transport = httpx.ASGITransport(app=finance, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as finance_client:
        responses = [
            await client.get(f"/v1/costs/monthly?month={month}", headers=_auth(tenant)),
            await client.get(f"/v1/costs/monthly?month={month}&format=csv", headers=_auth(tenant)),
            *[
                await finance_client.get(
                    f"{route}?month={month}", headers={"Authorization": "Bearer " + "t" * 32}
                )
                for route in ("/v1/finance/monthly-costs", "/v1/finance/daily-costs")
            ],
        ]
    for response in responses:
        assert response.status_code == 422, response.text
        _assert_422(response)
