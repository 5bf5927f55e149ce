"""Red team (issues 12 and 13): attacks on the analyst's figures and on the workbench page, each
asserting the SAFE / correct behaviour, so a promise that breaks makes its test FAIL.

Tests whose docstring starts `BROKE:` reproduced a broken promise when written; they keep
failing until the product is fixed. Real PostgreSQL built by the migrations, the application
role for everything the service does, figures checked against our own SQL (not the tools'), the
page driven in Debian's headless chromium (tests/browser.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.demo_data import generate_demo_data
from llm_service.investigations import service as investigations
from llm_service.investigations.runner import InvestigationRunner
from llm_service.investigations.understanding import ChannelInfo, understand
from llm_service.llm.pricing import gateway_from_settings
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant

# =============================================================================================
# (B) issue 12: the deterministic analyst states correct figures
# =============================================================================================

TODAY = datetime.now(UTC).date()


@pytest.fixture(scope="module")
async def demo_tenant(owner_pool: asyncpg.Pool) -> CreatedTenant:
    created = await create_tenant(owner_pool, f"rt-pages-{uuid.uuid4().hex[:6]}")
    async with tenant_transaction(owner_pool, created.tenant_id) as conn:
        await generate_demo_data(conn, created.tenant_id, events=3_000, seed=11)
    return created


async def taxonomy(pool: asyncpg.Pool) -> list[ChannelInfo]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT code, display_name, family, is_paid FROM channel_taxonomy WHERE is_active"
        )
    return [ChannelInfo(r["code"], r["display_name"], r["family"], r["is_paid"]) for r in rows]


async def ask(settings: Settings, pool: asyncpg.Pool, tenant_id: UUID, question: str) -> Any:
    """Queue a run as the API would, claim it for this test's own worker, run it without a
    model (the deterministic analyst), and read it back as the API shows it."""
    async with tenant_transaction(pool, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps) VALUES ($1, $2, 30, 60000, 8) RETURNING id",
            tenant_id,
            question,
        )
        await conn.execute(
            "UPDATE investigations SET status = 'running', lease_owner = 'rt-pages', "
            "lease_expires_at = now() + interval '1 minute' WHERE id = $1",
            run_id,
        )
    runner = InvestigationRunner(pool, gateway_from_settings(settings, pool), "rt-pages")
    status = await runner.run(run_id, tenant_id, takeover=False)
    assert status == "succeeded", status
    return await investigations.get(pool, tenant_id, run_id)


def claims(run: Any) -> str:
    return " ".join([run.summary or ""] + [str(f.get("claim", "")) for f in run.findings])


async def revenue_cents(
    pool: asyncpg.Pool, tenant_id: UUID, start: date, end: date, channels: list[str] | None
) -> int:
    """Independent SQL: the events' revenue in [start, end), for the channels (None: all)."""
    async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
        value = await conn.fetchval(
            "SELECT coalesce(sum(revenue_cents), 0) FROM attribution_events "
            "WHERE occurred_at >= $1 AND occurred_at < $2 "
            "AND ($3::text[] IS NULL OR channel = ANY($3::text[]))",
            datetime(start.year, start.month, start.day, tzinfo=UTC),
            datetime(end.year, end.month, end.day, tzinfo=UTC),
            channels,
        )
    return int(value)


async def data_days(pool: asyncpg.Pool, tenant_id: UUID) -> tuple[date, date]:
    async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
        row = await conn.fetchrow(
            "SELECT min(occurred_at) AS a, max(occurred_at) AS b FROM attribution_events"
        )
    return row["a"].astimezone(UTC).date(), row["b"].astimezone(UTC).date()


def usd(cents: int) -> str:
    return f"{Decimal(cents) / 100:,.2f}"


_CHANGE = re.compile(
    r"\((\d{4}-\d{2}-\d{2}) to (\d{4}-\d{2}-\d{2}) vs (\d{4}-\d{2}-\d{2}) to "
    r"(\d{4}-\d{2}-\d{2}), ends exclusive\), from (-?[\d,]+\.\d\d) USD to (-?[\d,]+\.\d\d) USD"
)


async def check_change_claim(
    pool: asyncpg.Pool, tenant_id: UUID, claim: str, channels: list[str] | None
) -> tuple[date, date]:
    """The first revenue comparison of `claim` states the figures our SQL computes for the
    periods the claim itself names; returns the current period."""
    m = _CHANGE.search(claim)
    assert m, f"no revenue comparison with figures in: {claim}"
    cs, ce, ps, pe = (date.fromisoformat(m.group(i)) for i in range(1, 5))
    assert await revenue_cents(pool, tenant_id, ps, pe, channels) == _cents(m.group(5)), claim
    assert await revenue_cents(pool, tenant_id, cs, ce, channels) == _cents(m.group(6)), claim
    return cs, ce


def _cents(text: str) -> int:
    return int((Decimal(text.replace(",", "")) * 100).to_integral_value())


def last_week() -> tuple[date, date]:
    start = TODAY - timedelta(days=TODAY.weekday()) - timedelta(days=7)
    return start, start + timedelta(days=7)


async def test_a_single_channel_drop_states_the_sql_figures(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """ "Why did facebook_paid revenue drop last week?": figures equal our SQL for last week."""
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        "Why did facebook_paid revenue drop last week?",
    )
    text = claims(run)
    period = await check_change_claim(app_pool, demo_tenant.tenant_id, text, ["facebook_paid"])
    assert period == last_week()


async def test_mixed_case_is_the_same_question(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """SHOUTED channel, metric and period: the same channel, period and figures."""
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        "WHY DID Facebook_Paid REVENUE DROP LAST WEEK?",
    )
    text = claims(run)
    assert "facebook_paid" in text
    period = await check_change_claim(app_pool, demo_tenant.tenant_id, text, ["facebook_paid"])
    assert period == last_week()


async def test_a_display_name_is_the_channel(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """The taxonomy's display name ("Google Ads" style) names the channel it belongs to."""
    channels = await taxonomy(app_pool)
    google = next(c for c in channels if c.code == "google_search_paid")
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        f"How did {google.name} revenue change last week?",
    )
    await check_change_claim(app_pool, demo_tenant.tenant_id, claims(run), [google.code])


async def test_two_channels_in_one_question_get_their_own_figures(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """ "facebook_paid and google_search_paid": the figures are those two channels', not the
    whole tenant's."""
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        "How did facebook_paid and google_search_paid revenue change last week?",
    )
    text = claims(run)
    start, end = last_week()
    fb = await revenue_cents(app_pool, demo_tenant.tenant_id, start, end, ["facebook_paid"])
    gs = await revenue_cents(app_pool, demo_tenant.tenant_id, start, end, ["google_search_paid"])
    both = (usd(fb) in text and usd(gs) in text) or usd(fb + gs) in text
    assert both, f"neither each channel's last-week revenue nor their sum is stated: {text}"
    everything = await revenue_cents(app_pool, demo_tenant.tenant_id, start, end, None)
    assert (
        not text.startswith("all channels")
        and f"to {usd(everything)} USD" not in text.split("Largest movements")[0]
    ), f"the two channels were answered with the whole tenant's figure: {text}"


async def test_a_channel_that_does_not_exist_is_not_answered_with_everything(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """BROKE: "myspace_paid" is not in the taxonomy; the answer must name it (as unknown), not silently
    answer for all channels as if that were its revenue."""
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        "Why did myspace_paid revenue drop last week?",
    )
    text = claims(run).lower()
    assert "myspace" in text, f"the unknown channel asked about is never mentioned: {text}"


async def test_a_future_week_is_not_compared_as_zero(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """BROKE: next week has no data; the analyst must say the asked-about window has no data,
    never state its revenue as 0.00 USD (it blamed only the comparison period)."""
    monday = TODAY - timedelta(days=TODAY.weekday()) + timedelta(days=7)
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        f"How did revenue change in the week of {monday.isoformat()}?",
    )
    text = claims(run)
    assert "100.0%" not in text and "0.00 USD" not in text, text
    assert re.search(r"no data|not covered|unknown", text), text


async def test_a_week_before_the_data_starts_is_not_stated_as_zero(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """BROKE: a week entirely before the first event: its revenue is unknown, not "was 0.00 USD"."""
    first, _ = await data_days(app_pool, demo_tenant.tenant_id)
    monday = first - timedelta(days=first.weekday()) - timedelta(days=21)
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        f"How did revenue change in the week of {monday.isoformat()}?",
    )
    text = claims(run)
    assert "0.00 USD" not in text, f"a window without data is given a figure of zero: {text}"
    assert re.search(r"no data|not covered|unknown", text), text


async def test_the_last_60_days_are_not_compared_with_days_before_the_data(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """The issue's own example: the 60 days before the last 60 are half before the data; no
    movement may be stated against them."""
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        "How did conversions change in the last 60 days?",
    )
    text = claims(run)
    assert not re.search(r"\b(rose|fell|grew|up|down)\b[^.]*against the previous 60 days", text), (
        text
    )
    assert re.search(r"not covered|unknown|not like for like", text), text


async def test_a_reversed_date_range_is_the_same_range(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """ "between <later> and <earlier>": the range between them, figures from our SQL."""
    end = TODAY - timedelta(days=7)
    start = end - timedelta(days=14)
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        f"How did facebook_paid revenue change between {end.isoformat()} and {start.isoformat()}?",
    )
    period = await check_change_claim(
        app_pool, demo_tenant.tenant_id, claims(run), ["facebook_paid"]
    )
    assert period == (start, end)


async def test_a_question_in_french_keeps_its_channel_and_states_true_figures(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """Another language: the channel code is still the channel; whatever period the claim names,
    its figures are our SQL's for that period."""
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        "Pourquoi le chiffre d'affaires (revenue) de facebook_paid a-t-il baissé ?",
    )
    text = claims(run)
    assert "facebook_paid" in text, text
    m = _CHANGE.search(text)
    if m:
        await check_change_claim(app_pool, demo_tenant.tenant_id, text, ["facebook_paid"])


async def test_today_without_data_is_not_a_100_percent_fall(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """BROKE: the demo data ends yesterday; "today" has no events, so "fell 100.0% day over day
    ... to 0.00 USD" compares a window without data as zero."""
    _, last = await data_days(app_pool, demo_tenant.tenant_id)
    assert last < TODAY  # the premise: today has no data
    run = await ask(test_settings, app_pool, demo_tenant.tenant_id, "How did revenue change today?")
    text = claims(run)
    assert "fell 100.0%" not in text and "to 0.00 USD" not in text, text
    assert re.search(r"no data|not covered|unknown", text), text


async def test_a_partly_covered_current_week_says_so(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """BROKE: "this week" when its last day(s) have no data yet: a week-over-week movement is
    stated without the tool's own "not like for like" warning."""
    _, last = await data_days(app_pool, demo_tenant.tenant_id)
    assert last < TODAY  # the premise: this week's last day has no data yet
    run = await ask(
        test_settings, app_pool, demo_tenant.tenant_id, "How did revenue change this week?"
    )
    text = claims(run)
    if re.search(r"\b(rose|fell)\b", text):
        assert re.search(r"not like for like|only \d+ of|partial|no data", text), text


async def test_other_than_paid_social_is_not_paid_social(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    """BROKE: "channels other than paid social" was answered with paid social only."""
    run = await ask(
        test_settings,
        app_pool,
        demo_tenant.tenant_id,
        "Which channels other than paid social brought the most revenue last week?",
    )
    text = claims(run)
    assert not text.startswith("paid social"), text


def test_negated_family_is_not_the_family() -> None:
    """BROKE: "except paid social" must not be understood as "paid social"."""
    channels = _static_channels()
    q = understand("Revenue of every channel except paid social last week", TODAY, channels)
    paid_social = {c.code for c in channels if c.family == "paid_social"}
    assert set(q.scope.channels) != paid_social, q.scope


def test_not_paid_is_not_paid() -> None:
    """BROKE: "channels that are not paid" must not be understood as the paid channels."""
    channels = _static_channels()
    q = understand(
        "How much revenue came from channels that are not paid last week?", TODAY, channels
    )
    paid = {c.code for c in channels if c.is_paid}
    assert not set(q.scope.channels) & paid, q.scope


def test_yesterday_at_midnight_utc_is_the_previous_calendar_day() -> None:
    """Asked at 00:00 UTC on D: "yesterday" is [D-1, D), not [D-2, D-1) or [D, D+1)."""
    day = date(2026, 12, 6)
    q = understand("How did revenue change yesterday?", day, _static_channels())
    assert (q.period.start, q.period.end) == (date(2026, 12, 5), day)


def _static_channels() -> list[ChannelInfo]:
    return [
        ChannelInfo("facebook_paid", "Facebook Ads", "paid_social", True),
        ChannelInfo("instagram_paid", "Instagram Ads", "paid_social", True),
        ChannelInfo("tiktok_ads", "TikTok Ads", "paid_social", True),
        ChannelInfo("google_search_paid", "Google Search Ads", "paid_search", True),
        ChannelInfo("bing_search_paid", "Bing Ads", "paid_search", True),
        ChannelInfo("organic_search", "Organic Search", "organic", False),
        ChannelInfo("email", "Email", "owned", False),
        ChannelInfo("direct", "Direct", "direct", False),
    ]
