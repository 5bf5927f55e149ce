"""Degraded explanations: no model, the monthly cap spent, the provider down, invalid output.

Each answers from the data (figures, the period), marked degraded with its reason, and is never
cached: the next request with a working model is a miss that calls the provider.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import respx
from explanation_helpers import (
    OPENAI_URL,
    QUESTION,
    FakeModel,
    auth,
    days,
    model_settings,
    serve,
    week,
)

from llm_service.db.pool import tenant_transaction
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant

pytestmark = pytest.mark.usefixtures("openai_key")
_FIGURE = re.compile(r"\d")


WEEK = 2  # inside the demo data; each test has its own channel, hence its own scope


def _body(channel: str, **extra: Any) -> dict[str, Any]:
    return {
        "subject": "period_change",
        "metric": "conversions",
        "channel": channel,
        "period": week(WEEK),
        "question": QUESTION,
        **extra,
    }


def _assert_degraded(answer: dict[str, Any], reason: str, n: int = WEEK) -> None:
    assert answer["degraded"] is True, answer
    assert answer["degraded_reason"] == reason
    assert answer["cache"] == "miss"
    assert answer["model"] is None
    summary = answer["explanation"]["summary"]
    assert week(n)["start"] in summary and week(n)["end"] in summary
    assert _FIGURE.search(summary), summary
    drivers = answer["explanation"]["drivers"]
    assert drivers and all(_FIGURE.search(d["figure"]) for d in drivers)
    assert answer["explanation"]["citations"][0]["query"] == "period_comparison"


async def _then_a_working_model_misses(
    settings: Settings, pool: asyncpg.Pool, tenant: CreatedTenant, body: dict[str, Any]
) -> None:
    """Nothing degraded was cached: with the model working, the same request calls it."""
    fake = FakeModel()
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=fake)
        async with serve(model_settings(settings), pool) as (_, client):
            answer = (await client.post("/v1/explanations", json=body, headers=auth(tenant))).json()
    assert answer["cache"] == "miss" and answer["degraded"] is False
    assert route.call_count == 1


async def test_no_model_configured(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    body = _body("facebook_paid", metric="revenue")
    async with serve(test_settings, app_pool) as (_, client):
        response = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
        again = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
    assert response.status_code == 200, response.text
    answer = response.json()
    _assert_degraded(answer, "no_model")
    assert answer["cost_usd"] == "0"
    assert "facebook_paid" in answer["explanation"]["summary"]
    assert again.json()["cache"] == "miss"
    await _then_a_working_model_misses(test_settings, app_pool, demo_tenant, body)


@pytest.fixture
async def cap_spent(
    owner_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> AsyncIterator[CreatedTenant]:
    """The demo tenant with a monthly cap of 0 (restored afterwards)."""

    async def set_cap(cents: int | None) -> int | None:
        async with tenant_transaction(owner_pool, demo_tenant.tenant_id) as conn:
            previous: int | None = await conn.fetchval(
                "SELECT monthly_cap_cents FROM tenants WHERE id = $1", demo_tenant.tenant_id
            )
            await conn.execute(
                "UPDATE tenants SET monthly_cap_cents = $2 WHERE id = $1",
                demo_tenant.tenant_id,
                cents,
            )
        return previous

    previous = await set_cap(0)
    yield demo_tenant
    await set_cap(previous)


async def test_monthly_cap_spent(
    test_settings: Settings, app_pool: asyncpg.Pool, cap_spent: CreatedTenant
) -> None:
    body = _body("google_search_paid")
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=FakeModel())
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            answer = (
                await client.post("/v1/explanations", json=body, headers=auth(cap_spent))
            ).json()
    _assert_degraded(answer, "monthly_cap_spent")
    assert route.call_count == 0  # checked before calling
    assert answer["cost_usd"] == "0"


async def test_monthly_cap_spent_is_not_cached(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    await _then_a_working_model_misses(
        test_settings, app_pool, demo_tenant, _body("google_search_paid")
    )


async def test_provider_down(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    body = _body("email")
    down = FakeModel(status=503)
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=down)
        settings = model_settings(test_settings, llm_max_attempts=2)
        async with serve(settings, app_pool) as (_, client):
            answer = (
                await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
            ).json()
    _assert_degraded(answer, "provider_unavailable")
    assert route.call_count == 2  # the attempts allowed, then the deterministic answer
    await _then_a_working_model_misses(test_settings, app_pool, demo_tenant, body)


async def test_invalid_model_output_after_the_repair(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    body = _body("affiliate")
    nonsense = FakeModel(content="I think revenue fell because of the weather.")
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=nonsense)
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            answer = (
                await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
            ).json()
    _assert_degraded(answer, "invalid_model_output")
    assert route.call_count == 2  # the answer and one repair
    assert float(answer["cost_usd"]) > 0  # both calls were paid for
    async with tenant_transaction(app_pool, demo_tenant.tenant_id, readonly=True) as conn:
        quarantined = await conn.fetchval(
            "SELECT count(*) FROM llm_validation_failures WHERE endpoint = 'explanations'"
        )
    assert quarantined >= 2
    await _then_a_working_model_misses(test_settings, app_pool, demo_tenant, body)


async def test_concurrent_waiters_share_a_degraded_answer(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    import asyncio

    body = _body("instagram_paid")
    down = FakeModel(status=503, delay=0.2)
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=down)
        settings = model_settings(test_settings, llm_max_attempts=1)
        async with serve(settings, app_pool) as (_, client):
            answers = await asyncio.gather(
                *(
                    client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
                    for _ in range(10)
                )
            )
    assert route.call_count == 1  # one failed call for the flight, not one per waiter
    for answer in answers:
        _assert_degraded(answer.json(), "provider_unavailable")


async def test_a_period_without_data_is_unknown_not_zero(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """A new user's "this week" (the data ended before it): no "-100%" from an empty period, no
    movers, the reason in the summary, confidence low."""
    body = _body("google_search_paid", metric="revenue", period=days(-30, 7))
    body["comparison"] = week(WEEK)
    async with serve(test_settings, app_pool) as (_, client):
        response = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
    assert response.status_code == 200, response.text
    explanation = response.json()["explanation"]
    summary = explanation["summary"]
    assert "cannot be compared" in summary and "unknown, not zero" in summary, summary
    assert "-100" not in summary and "0.00 (" not in summary
    assert explanation["drivers"] == []
    assert explanation["confidence"] == "low"


async def test_a_period_the_data_covers_in_part_is_not_like_for_like(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """A period running past the data's last day: its figures are stated with the caveat, and
    the confidence is low."""
    body = _body("google_search_paid", metric="revenue", period=days(3, 7))
    body["comparison"] = week(WEEK)
    async with serve(test_settings, app_pool) as (_, client):
        response = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
    assert response.status_code == 200, response.text
    explanation = response.json()["explanation"]
    assert "not like for like" in explanation["summary"], explanation["summary"]
    assert explanation["confidence"] == "low"
    assert explanation["drivers"]  # the figures that exist are still stated


@pytest.mark.parametrize(("period", "words"), [("yesterday", "1 day)"), ("last week", "7 days)")])
async def test_a_summary_counts_its_days_in_plain_words(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant,
    period: str, words: str,
) -> None:  # fmt: skip
    body = {"subject": "channel_performance", "period": period}
    async with serve(test_settings, app_pool) as (_, client):
        response = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
    summary = response.json()["explanation"]["summary"]
    assert f"(end excluded, {words}" in summary, summary
    assert "1 days" not in summary
