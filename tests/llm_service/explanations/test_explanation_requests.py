"""Requests to POST /v1/explanations: relative periods, validation (422) and authentication."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from explanation_helpers import auth, days, serve, today, week

from llm_service.periods import resolve_named, resolve_period
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant


@pytest.fixture
async def api(test_settings: Settings, app_pool: asyncpg.Pool) -> Any:
    """A client of the app without a model (every answer is computed from the data)."""
    async with serve(test_settings, app_pool) as (_, client):
        yield client


async def test_a_relative_period_is_resolved_to_absolute_dates(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    body = {"subject": "period_change", "period": "last week", "channel": "email"}
    response = await api.post("/v1/explanations", json=body, headers=auth(tenant))
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = resolve_period("last week", today())
    assert answer["period"] == expected.as_dict() == week(1)
    assert answer["comparison"] == expected.previous().as_dict()
    citation = answer["explanation"]["citations"][0]
    assert citation["parameters"]["current"] == expected.as_dict()
    # An empty tenant: nothing to explain, said plainly.
    assert answer["explanation"]["confidence"] == "low"


async def test_last_month_is_compared_with_the_calendar_month_before(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """As a marketer reads "last month": November against October, not the 30 days before."""
    body = {"subject": "period_change", "period": "last month", "channel": "email"}
    answer = (await api.post("/v1/explanations", json=body, headers=auth(tenant))).json()
    first = today().replace(day=1)
    last_month = (first - timedelta(days=1)).replace(day=1)
    month_before = (last_month - timedelta(days=1)).replace(day=1)
    assert answer["period"] == {"start": last_month.isoformat(), "end": first.isoformat()}
    assert answer["comparison"] == {
        "start": month_before.isoformat(),
        "end": last_month.isoformat(),
    }


async def test_last_n_days_and_an_explicit_comparison(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    body = {"subject": "period_change", "period": "last 14 days", "comparison": days(60, 14)}
    answer = (await api.post("/v1/explanations", json=body, headers=auth(tenant))).json()
    assert answer["period"] == resolve_period("last 14 days", today()).as_dict()
    assert answer["comparison"] == days(60, 14)


@pytest.mark.parametrize(
    "body",
    [
        {"subject": "weather_forecast", "period": week(1)},
        {"subject": "channel_performance"},
        {"subject": "channel_performance", "period": {"start": "2026-02-30", "end": "2026-03-02"}},
        {"subject": "channel_performance", "period": {"start": "yesterday", "end": "2026-03-02"}},
        {"subject": "channel_performance", "period": {"start": "2026-03-02", "end": "2026-03-02"}},
        {"subject": "channel_performance", "period": {"start": "2026-03-09", "end": "2026-03-02"}},
        {"subject": "channel_performance", "period": {"start": "2024-01-01", "end": "2025-01-03"}},
        {"subject": "channel_performance", "period": {"start": "2026-03-02"}},
        {"subject": "channel_performance", "period": {**week(1), "tz": "UTC"}},
        {"subject": "channel_performance", "period": "when the moon was full"},
        {"subject": "channel_performance", "period": ""},
        {"subject": "channel_performance", "period": "2024-01-01 to 2025-06-01"},
        {"subject": "channel_performance", "period": "the week of 2026-13-01"},
        {"subject": "channel_performance", "period": "on 2026-02-30"},
        {"subject": "channel_performance", "period": "the week of 9999-12-30"},
        {"subject": "channel_performance", "period": "the week of 1969-12-29"},
        {"subject": "channel_performance", "period": "October"},
        {"subject": "channel_performance", "period": week(1), "channel": "Facebook Paid"},
        {"subject": "channel_performance", "period": week(1), "channel": "myspace_paid"},
        {"subject": "channel_performance", "period": week(1), "metric": "roas"},
        {"subject": "attribution_model_disagreement", "period": week(1), "metric": "revenue"},
        {"subject": "revenue_reconciliation", "period": week(1), "channel": "email"},
        {"subject": "revenue_reconciliation", "period": week(1), "attribution_model": "linear"},
        {"subject": "channel_performance", "period": week(1), "comparison": week(2)},
        {"subject": "period_change", "period": week(1), "comparison": {"start": "2026-01-01"}},
        {"subject": "channel_performance", "period": week(1), "attribution_model": "vibes"},
        {"subject": "channel_performance", "period": week(1), "question": "x" * 501},
        {"subject": "channel_performance", "period": week(1), "unexpected": True},
    ],
)
async def test_invalid_requests_are_422(
    api: httpx.AsyncClient, tenant: CreatedTenant, body: dict[str, Any]
) -> None:
    response = await api.post("/v1/explanations", json=body, headers=auth(tenant))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("phrase", "days_long"),
    [("in October", None), ("three weeks ago", 7), ("the week of 2026-11-09", 7),
     ("on 11 November", 1), ("the last two weeks", 14), ("past week", 7)],
)  # fmt: skip
async def test_the_analysts_phrases_are_understood_here_too(
    api: httpx.AsyncClient, tenant: CreatedTenant, phrase: str, days_long: int | None
) -> None:
    """One reading of a phrase for the analyst and the dashboards (a new user's "in October"
    was a 422 here and understood by the analyst)."""
    body = {"subject": "channel_performance", "period": phrase}
    response = await api.post("/v1/explanations", json=body, headers=auth(tenant))
    assert response.status_code == 200, response.text
    expected, named = resolve_named(phrase, today())
    assert named and response.json()["period"] == expected.as_dict()
    if days_long is not None:
        assert expected.days == days_long


async def test_a_500_character_question_is_accepted(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    body = {"subject": "channel_performance", "period": week(1), "question": "y" * 500}
    assert (await api.post("/v1/explanations", json=body, headers=auth(tenant))).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer lsk_" + "x" * 43}, {"Authorization": "Basic abc"}],
)
async def test_without_a_valid_key_it_is_401(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = {"subject": "channel_performance", "period": week(1)}
    response = await api.post("/v1/explanations", json=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
