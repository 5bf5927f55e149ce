"""Red team (session 24): period phrases and explanations over periods the data does not cover.

Written after the deadline had already passed (the session was interrupted), so only promise 3
(and the explanations side of 2) is attacked here; promises 1, 4, 5 and 6 were not attacked.
Three attacks broke and are fixed (session 25): they say so in their docstrings.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from llm_service.periods import resolve_named
from llm_service.tenants.service import CreatedTenant

TODAY = date(2026, 12, 7)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    "phrase",
    [
        "week of 2026-02-29",
        "on 31 April",
        "week of 31 february",
        "week of 9999-12-31",
        "on 0000-01-01",
        "past 367 days",
        "x" * 100_000,
        "last wek " * 5_000,
    ],
)
def test_odd_phrases_never_raise(phrase: str) -> None:
    """Held: not-a-day, past-9999 and very long text fall back (named False) without raising."""
    _period, named = resolve_named(phrase, TODAY)
    assert named is False


def test_unicode_digits_read_as_the_same_day() -> None:
    """Held: Arabic-Indic digits in an ISO date read as that day (int() accepts them)."""
    period, named = resolve_named("on \u0662\u0660\u0662\u0666-\u0661\u0660-\u0661\u0664", TODAY)
    assert named and period.start == date(2026, 10, 14) and period.days == 1


@pytest.mark.parametrize("phrase", ["last 0 weeks", "past 00 weeks", "previous 0 weeks"])
def test_zero_weeks_is_not_a_named_empty_period(phrase: str) -> None:
    """Broke (fixed in session 25): the phrase named an EMPTY period; a count is now >= 1."""
    period, named = resolve_named(phrase, TODAY)
    assert not (named and period.days == 0)


def test_zero_weeks_ago_does_not_reach_into_the_future() -> None:
    """Broke (fixed in session 25): this week plus six future days; now no named period."""
    period, named = resolve_named("0 weeks ago", TODAY)
    assert not named or period.end <= TODAY + timedelta(days=1)


@pytest.mark.parametrize(
    "phrase", ["week of 1900-01-01", "the week starting 1969-12-29", "on 2100-01-01"]
)
def test_a_period_outside_the_service_calendar_is_not_named(phrase: str) -> None:
    """Noticed in session 24 (the analyst read a week of 1900): outside 1970..2099 nothing is
    named, so the analyst falls back to its default window and says so."""
    period, named = resolve_named(phrase, TODAY)
    assert named is False
    assert period.start >= date(1970, 1, 1)


def test_in_may_is_not_read_by_design() -> None:
    """Noted, held as designed: 'in May' is never a period (the modal verb 'may' wins), so an
    explanation 'in May' is a 422 and the analyst falls back to the last 28 days (and says so)."""
    assert resolve_named("in May", TODAY)[1] is False
    assert resolve_named("in October", TODAY)[1] is True


def _body(period: Any, **extra: Any) -> dict[str, Any]:
    return {"subject": "period_change", "metric": "revenue", "period": period, **extra}


async def test_explanation_last_zero_weeks_is_refused(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """Held: the explanations route refuses the empty period the phrase reader gives (422)."""
    response = await client.post(
        "/v1/explanations", json=_body("last 0 weeks"), headers=_bearer(tenant.api_key)
    )
    assert response.status_code == 422, (response.status_code, response.text[:400])


async def test_explanation_empty_tenant_period_is_unknown(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """Held: a tenant with no data at all: period_change over 'last week' cannot be compared,
    confidence low."""
    response = await client.post(
        "/v1/explanations", json=_body("last week"), headers=_bearer(tenant.api_key)
    )
    assert response.status_code == 200, response.text[:400]
    text = response.text
    assert "cannot be compared" in text, text[:800]
    assert response.json()["explanation"]["confidence"] == "low", text[:800]


async def test_channel_performance_without_data_does_not_state_zero_as_fact(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """Broke (fixed in session 25): 'across 0 channels was 0.00', then 'There is no data'.
    Now the figure 'cannot be stated'; the model is told every figure is unknown."""
    response = await client.post(
        "/v1/explanations",
        json={"subject": "channel_performance", "period": "last week"},
        headers=_bearer(tenant.api_key),
    )
    assert response.status_code == 200, response.text[:400]
    body = response.json()

    summary = body["explanation"]["summary"]
    assert body["explanation"]["confidence"] == "low", summary
    assert "0.00" not in summary, summary
