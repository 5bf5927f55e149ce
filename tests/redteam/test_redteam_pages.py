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
import random
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from llm_service.api.app import create_app
from llm_service.db.pool import tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.investigations import service as investigations
from llm_service.investigations.runner import InvestigationRunner
from llm_service.investigations.understanding import ChannelInfo, understand
from llm_service.jobs.kinds import Claim
from llm_service.llm.pricing import gateway_from_settings
from llm_service.optimizations.runner import run_budget_optimization
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from tests.browser import Browser, LiveServer, Page, chromium_path, serve_app
from tests.helpers.served_app import create_demo_tenant
from tests.llm_service.finance.finance_workload import random_workload

# =============================================================================================
# (B) issue 12: the deterministic analyst states correct figures
# =============================================================================================

TODAY = datetime.now(UTC).date()


@pytest.fixture(scope="module")
async def demo_tenant(owner_pool: asyncpg.Pool) -> CreatedTenant:
    return await create_demo_tenant(owner_pool, "rt-pages", events=3_000, seed=11)


async def taxonomy(pool: asyncpg.Pool) -> list[ChannelInfo]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT code, display_name, family, is_paid FROM channel_taxonomy WHERE is_active"
        )
    return [ChannelInfo(r["code"], r["display_name"], r["family"], r["is_paid"]) for r in rows]


_owner: list[asyncpg.Pool] = []  # the owner's pool, for `ask` (set for every test below)


@pytest.fixture(autouse=True)
def _owner_for_claims(owner_pool: asyncpg.Pool) -> Iterator[None]:
    _owner.append(owner_pool)
    yield
    _owner.clear()


async def ask(settings: Settings, pool: asyncpg.Pool, tenant_id: UUID, question: str) -> Any:
    """Queue a run as the API would, claim it for this test's own worker (as the claim does:
    a fresh lease token, the row keeping its hash; only the owner may write it outside the
    claim), run it without a model (the deterministic analyst), and read it back."""
    async with tenant_transaction(pool, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps) VALUES ($1, $2, 30, 60000, 8) RETURNING id",
            tenant_id,
            question,
        )
    token = uuid.uuid4()
    async with tenant_transaction(_owner[0], tenant_id) as conn:
        await conn.execute(
            "UPDATE investigations SET status = 'running', lease_owner = 'rt-pages', "
            "lease_expires_at = now() + interval '1 minute', "
            "lease_token_hash = sha256(uuid_send($2::uuid)) WHERE id = $1",
            run_id,
            token,
        )
    runner = InvestigationRunner(pool, gateway_from_settings(settings, pool), "rt-pages")
    status = await runner.run(Claim("investigation", run_id, tenant_id, False, token))
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
    """BROKE: "myspace_paid" is not in the taxonomy; the answer must name it (as unknown),
    not silently answer for all channels as if that were its revenue."""
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


# =============================================================================================
# (A) issue 13: the workbench page renders hostile content as text, guards the key, starts one
# run per draft, keeps to the ceilings, and has a strict CSP
# =============================================================================================

PWN = "window.__pwned = (window.__pwned || 0) + 1"
HOSTILE = (
    f'<script>{PWN}</script><img src=x onerror="{PWN}"><svg onload="{PWN}"><a href="javascript:'
    f'{PWN}">x</a></svg><style>body{{display:none}}</style><iframe srcdoc="<script>{PWN}'
    f'</script>"></iframe>" onmouseover="{PWN}" x="'
)

#: What the page may hold after rendering hostile content: its own two scripts, no more.
_DOM_CHECK = """() => {
  const hasOn = [...document.querySelectorAll("*")].some((e) =>
    [...e.attributes].some((a) => a.name.startsWith("on")));
  return JSON.stringify({
    pwned: window.__pwned || 0,
    scripts: document.scripts.length,
    imgs: document.querySelectorAll("img, iframe, style, object, embed").length,
    js_links: document.querySelectorAll('[href^="javascript:" i], [src^="javascript:" i]').length,
    on_attrs: hasOn,
    svg_anchors: document.querySelectorAll("svg a, svg script, svg foreignObject").length,
  });
}"""
_CLEAN = {"pwned": 0, "scripts": 2, "imgs": 0, "js_links": 0, "on_attrs": False, "svg_anchors": 0}


@pytest.fixture(scope="module")
def live(test_settings: Settings, database_urls: DatabaseUrls) -> Iterator[LiveServer]:
    with serve_app(test_settings, database_urls, name="rt-pages") as server:
        yield server


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with Browser.launch(chromium_path()) as launched:
        yield launched


async def hostile_run(owner_pool: asyncpg.Pool, tenant_id: UUID) -> UUID:
    """A finished run whose every model- and data-sourced text is hostile HTML."""
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, status, reason, degraded, "
            "started_at, finished_at, elapsed_ms) "
            "VALUES ($1, $2, 'succeeded', $3, true, now(), now(), 1200) RETURNING id",
            tenant_id,
            "Q " + HOSTILE,
            "R " + HOSTILE,
        )
        comparison = await conn.fetchval(
            "INSERT INTO investigation_tool_calls (tenant_id, investigation_id, step, tool_name, "
            "input_params, output, duration_ms) VALUES ($1, $2, 1, $3, $4, $5, 7) RETURNING id",
            tenant_id,
            run_id,
            "compare_periods" + HOSTILE,
            {HOSTILE: HOSTILE, "channel": HOSTILE},
            (
                {
                    "rows": [
                        {
                            "channel": HOSTILE,
                            HOSTILE: HOSTILE,
                            "current_revenue_cents": 100,
                            "previous_revenue_cents": 300,
                        },
                        {
                            "channel": "javascript:" + PWN,
                            "current_revenue_cents": 5,
                            "previous_revenue_cents": 7,
                        },
                    ]
                }
            ),
        )
        series = await conn.fetchval(
            "INSERT INTO investigation_tool_calls (tenant_id, investigation_id, step, tool_name, "
            "input_params, output, duration_ms, error) VALUES ($1, $2, 1, 'revenue_state_changes', "
            "'{}', $3, 9, NULL) RETURNING id",
            tenant_id,
            run_id,
            (
                {
                    "by_day": [
                        {"day": HOSTILE, HOSTILE: 3},
                        {"day": "2026-11-02" + HOSTILE, HOSTILE: 4},
                    ]
                }
            ),
        )
        result = {
            "summary": "S " + HOSTILE,
            "findings": [
                {"claim": HOSTILE, "evidence": [str(comparison), str(series)]},
                {"claim": "second " + HOSTILE, "evidence": [HOSTILE]},
            ],
        }
        await conn.execute("UPDATE investigations SET result = $2 WHERE id = $1", run_id, result)
        for kind, data in (
            ("queued", {"question": HOSTILE, "max_cost_usd": "0.30", "timeout_s": 60}),
            ("started", {"limits": {"max_cost_usd": "0.30", "timeout_s": 60, "max_steps": 8}}),
            (
                "tool_call",
                {
                    "evidence_id": str(comparison),
                    "tool": HOSTILE,
                    "arguments": {HOSTILE: HOSTILE},
                    "duration_ms": 7,
                    "error": HOSTILE,
                },
            ),
            (
                "llm_call",
                {
                    "model": HOSTILE,
                    "cost_usd": "0.001",
                    "input_tokens": HOSTILE,
                    "output_tokens": 1,
                    "tool_calls": [HOSTILE],
                    "spent_usd": "0.001",
                },
            ),
            ("note", {"message": HOSTILE}),
            (
                "final",
                {"status": "succeeded", "reason": HOSTILE, "cost_usd": "0.001", "elapsed_s": 1.2},
            ),
        ):
            await conn.execute(
                "INSERT INTO investigation_events (tenant_id, investigation_id, event_type, data) "
                "VALUES ($1, $2, $3, $4)",
                tenant_id,
                run_id,
                kind,
                data,
            )
    return run_id


async def open_page(browser: Browser, live: LiveServer, key: str, run_id: UUID | None) -> Page:
    page = await browser.new_page()
    fragment = f"#key={key}" + (f"&run={run_id}" if run_id else "")
    await page.goto(f"{live.base_url}/investigations{fragment}")
    await page.wait_for("() => document.body.dataset.state === 'ready'")
    return page


async def test_hostile_model_and_data_text_renders_as_text(
    browser: Browser, live: LiveServer, owner_pool: asyncpg.Pool
) -> None:
    """Question, reason, summary, findings, tool names, arguments, result keys and values,
    chart labels, SSE event fields and the tenant's name: all hostile HTML, all shown as text;
    nothing runs, no element or attribute is injected, no CSP / Trusted Types violation."""
    tenant = await create_tenant(owner_pool, "T " + HOSTILE)
    run_id = await hostile_run(owner_pool, tenant.tenant_id)
    page = await open_page(browser, live, tenant.api_key, run_id)
    await page.wait_for("() => document.querySelectorAll('[data-testid=finding]').length === 2")
    await page.click("[data-testid=finding-toggle]")
    await page.wait_for("() => document.querySelector('[data-testid=chart]')")
    for button in ("#history-list button",):
        await page.evaluate(f"document.querySelector({json.dumps(button)})?.focus()")
    state = json.loads(await page.evaluate(f"({_DOM_CHECK})()"))
    assert state == _CLEAN, state
    claims_text = await page.evaluate(
        "[...document.querySelectorAll('[data-testid=claim]')].map((e) => e.textContent)"
    )
    assert claims_text == [HOSTILE, "second " + HOSTILE]
    body = await page.evaluate("document.body.innerText")
    assert "T " + HOSTILE in body and "S " + HOSTILE in body and "Q " + HOSTILE in body
    assert await page.evaluate("getComputedStyle(document.body).display") != "none"
    assert page.problems() == []


async def test_the_key_never_reaches_a_url_and_leaves_with_sign_out(
    browser: Browser, live: LiveServer, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """Signed in by the form: no request URL, no address, no history entry carries the key;
    after sign-out neither storage, cookies, the address nor the DOM holds it."""
    run_id = await hostile_run(owner_pool, tenant.tenant_id)
    page = await browser.new_page()
    await page.send("Network.enable")
    await page.goto(f"{live.base_url}/investigations#run={run_id}")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    await page.type("#api-key", tenant.api_key)
    await page.press("Enter")
    await page.wait_for("() => document.querySelectorAll('[data-testid=finding]').length === 2")
    urls = await page.evaluate(
        "[location.href, document.referrer, ...performance.getEntriesByType('resource')"
        ".map((e) => e.name), ...performance.getEntriesByType('navigation').map((e) => e.name)]"
    )
    assert not [u for u in urls if tenant.api_key in u], urls
    sent = [
        e["params"]["request"]["url"]
        for e in browser.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert len(sent) >= 3  # the page, its assets and its API calls were seen
    assert not [u for u in sent if tenant.api_key in u]
    await page.click("#sign-out")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    leftovers = await page.evaluate(
        "JSON.stringify([document.documentElement.outerHTML, document.getElementById('api-key')"
        ".value, Object.values(sessionStorage), Object.values(localStorage), document.cookie, "
        "location.href])"
    )
    assert tenant.api_key not in leftovers


async def test_sign_out_leaves_none_of_the_tenants_data_in_the_page(
    browser: Browser, live: LiveServer, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """Held (broke until session 24): after sign-out the previous tenant's run (question,
    summary, findings, history) was still in the DOM, only hidden: on a shared machine the next
    person read it with devtools or "view selection". Sign-out now empties every part."""
    run_id = await hostile_run(owner_pool, tenant.tenant_id)
    page = await open_page(browser, live, tenant.api_key, run_id)
    await page.wait_for("() => document.querySelectorAll('[data-testid=finding]').length === 2")
    await page.click("#sign-out")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    text = await page.evaluate("document.body.textContent")
    assert "Q <script>" not in text and "S <script>" not in text, (
        "the signed-out tenant's run is still in the page (hidden)"
    )
    html = await page.evaluate("document.documentElement.outerHTML + location.href")
    assert str(run_id) not in html  # not in a data attribute, the history, nor the address
    # The next person signs in with another tenant's key: the page works, shows only theirs.
    other = await create_tenant(owner_pool, "next person")
    own_run = await hostile_run(owner_pool, other.tenant_id)
    await page.type("#api-key", other.api_key)
    await page.press("Enter")
    await page.wait_for(
        "() => document.body.dataset.state === 'ready'"
        " && document.querySelectorAll('#history-list li[data-run-id]').length === 1"
    )
    listed = await page.evaluate(
        "[...document.querySelectorAll('#history-list li[data-run-id]')]"
        ".map((e) => e.dataset.runId)"
    )
    assert listed == [str(own_run)]
    html = await page.evaluate("document.documentElement.outerHTML + location.href")
    assert str(run_id) not in html
    assert page.problems() == []


async def count_runs(owner_pool: asyncpg.Pool, tenant_id: UUID) -> int:
    async with tenant_transaction(owner_pool, tenant_id, readonly=True) as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM investigations WHERE tenant_id = $1", tenant_id
            )
        )


async def settled(page: Page) -> None:
    await page.wait_for(
        "() => document.querySelector('[data-testid=run-question]').textContent.length > 0"
        " && !document.getElementById('submit').hasAttribute('aria-disabled')"
    )


async def test_double_click_enter_and_rapid_resubmits_start_one_run(
    browser: Browser, live: LiveServer, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """One draft: a double click, Ctrl+Enter with a click, and five more submits in a burst
    (from script, as fast as the page takes them) all land on the same single run."""
    page = await open_page(browser, live, tenant.api_key, None)
    await page.type("#question", "How did revenue change last week?")
    await page.click("[data-testid=submit]", clicks=2)
    await settled(page)
    await page.evaluate("document.getElementById('question').focus()")
    await page.send(
        "Input.dispatchKeyEvent",
        {"type": "keyDown", "key": "Enter", "windowsVirtualKeyCode": 13, "modifiers": 2},
    )
    await page.click("[data-testid=submit]")
    await page.evaluate(
        "for (let i = 0; i < 5; i++) document.getElementById('ask-form').requestSubmit()"
    )
    await settled(page)
    assert await count_runs(owner_pool, tenant.tenant_id) == 1
    assert page.problems() == []


async def test_sliders_stop_at_the_ceilings_and_a_forged_limit_is_refused(
    browser: Browser, live: LiveServer, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """The sliders' maxima are the service's ceilings; a user who edits the slider's max in
    devtools and submits $5 / 600 s gets an error and no run."""
    page = await open_page(browser, live, tenant.api_key, None)
    limits = await page.evaluate(
        "fetch('v1/investigations/limits', {headers: {Authorization: 'Bearer ' + "
        "sessionStorage.getItem('llm-service-tenant-key')}}).then((r) => r.json())"
    )
    got = await page.evaluate(
        "[document.getElementById('max-cost').max, document.getElementById('timeout').max]"
    )
    assert (
        Decimal(got[0]) == Decimal(limits["max_cost_usd"]) and float(got[1]) == limits["timeout_s"]
    )
    await page.type("#question", "How did revenue change last week?")
    await page.evaluate(
        "(() => { const c = document.getElementById('max-cost'); c.max = '5'; c.value = '5';"
        " const t = document.getElementById('timeout'); t.max = '600'; t.value = '600';"
        " c.dispatchEvent(new Event('input')); })()"
    )
    await page.click("[data-testid=submit]")
    await page.wait_for(
        "() => /Could not start/.test(document.getElementById('status').textContent)"
    )
    assert await count_runs(owner_pool, tenant.tenant_id) == 0


async def test_the_page_and_its_assets_carry_a_strict_csp(live: LiveServer) -> None:
    """No inline script or style, no eval, no remote origin, Trusted Types, no framing."""
    async with httpx.AsyncClient(base_url=live.base_url) as http:
        for path in (
            "/investigations",
            "/investigations/workbench.js",
            "/investigations/workbench-evidence.js",
            "/investigations/workbench.css",
        ):
            response = await http.get(path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            directives = dict(
                (part.split()[0], part.split()[1:]) for part in csp.split(";") if part.strip()
            )
            assert directives["default-src"] == ["'none'"]
            assert directives["script-src"] == ["'self'"], csp
            assert directives["style-src"] == ["'self'"], csp
            assert directives["frame-ancestors"] == ["'none'"]
            assert "require-trusted-types-for" in directives
            assert "unsafe" not in csp and "*" not in csp and "http" not in csp
            assert response.headers["x-content-type-options"] == "nosniff"
        html = (await http.get("/investigations")).text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script in the page"
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "a remote asset"


# ---- the API's ceilings, whatever the page -----------------------------------------------


@pytest.fixture
async def api(test_settings: Settings, app_pool: asyncpg.Pool) -> AsyncIterator[Any]:
    """A client factory for the real application under given settings."""
    clients: list[httpx.AsyncClient] = []

    def make(settings: Settings) -> httpx.AsyncClient:
        app = create_app(settings, pool=app_pool)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://test",
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.mark.parametrize(
    "body",
    [
        {"max_cost_usd": "0.300001"},
        {"max_cost_usd": "0.31"},
        {"max_cost_usd": "1e3"},
        {"max_cost_usd": "Infinity"},
        {"max_cost_usd": "NaN"},
        {"max_cost_usd": "-0.01"},
        {"timeout_s": 60.001},
        {"timeout_s": 1e309},
        {"max_steps": 1000},
    ],
)
async def test_the_api_refuses_limits_above_its_ceilings(
    api: Any, test_settings: Settings, tenant: CreatedTenant, body: dict[str, Any]
) -> None:
    """Above the ceiling, or not a number: 422 with the error shape, no run."""
    http = api(test_settings)
    content = json.dumps({"question": "How did revenue change last week?", **body}).replace(
        '"1e309"', "1e309"
    )
    response = await http.post(
        "/v1/investigations",
        content=content,
        headers={
            "Authorization": f"Bearer {tenant.api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    assert response.status_code == 422, response.text
    assert set(response.json()["error"]) >= {"code", "message"}


async def test_a_lower_service_ceiling_binds_the_api(
    api: Any, test_settings: Settings, tenant: CreatedTenant
) -> None:
    """The operator lowers the ceiling to $0.10 / 20 s: the limits say so and a request for
    $0.25 / 50 s never gets a run above them."""
    settings = test_settings.model_copy(
        update={"investigation_max_cost_usd": Decimal("0.10"), "investigation_timeout_s": 20.0}
    )
    http = api(settings)
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    limits = (await http.get("/v1/investigations/limits", headers=auth)).json()
    assert Decimal(limits["max_cost_usd"]) == Decimal("0.10") and limits["timeout_s"] == 20.0
    response = await http.post(
        "/v1/investigations",
        json={"question": "How did revenue change?", "max_cost_usd": "0.25", "timeout_s": 50},
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
    )
    if response.status_code != 422:
        run = response.json()
        assert Decimal(run["max_cost_usd"]) <= Decimal("0.10") and run["timeout_s"] <= 20.0


async def test_a_looser_configured_ceiling_is_not_a_500(
    api: Any, test_settings: Settings, tenant: CreatedTenant
) -> None:
    """BROKE (suspected): an operator sets INVESTIGATION_MAX_COST_USD=1.00 / timeout 120 s; the
    limits endpoint says $0.30 / 60 s, so a request without limits must get a run within
    those, not the raw setting (which the table refuses: a 500)."""
    settings = test_settings.model_copy(
        update={"investigation_max_cost_usd": Decimal("1.00"), "investigation_timeout_s": 120.0}
    )
    http = api(settings)
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    limits = (await http.get("/v1/investigations/limits", headers=auth)).json()
    response = await http.post(
        "/v1/investigations",
        json={"question": "How did revenue change last week?"},
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code in (200, 201, 202), response.text
    run = response.json()
    assert Decimal(run["max_cost_usd"]) <= Decimal(limits["max_cost_usd"])
    assert run["timeout_s"] <= limits["timeout_s"]


# ---- (B) budget proposals never buy unpaid channels unless asked --------------------------


@dataclass(frozen=True)
class _Claim:
    kind: str
    run_id: UUID
    tenant_id: UUID
    takeover: bool
    lease_token: UUID


async def _propose(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool,
    tenant: CreatedTenant, body: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    start = TODAY - timedelta(days=60)
    payload = {"period": {"start": start.isoformat(), "end": TODAY.isoformat()}, **body}
    response = await client.post("/v1/budget-optimizations", json=payload, headers=auth)
    assert response.status_code == 202, response.text
    job_id = UUID(response.json()["id"])
    token = uuid.uuid4()
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute(
            "UPDATE budget_optimization_jobs SET status = 'running', lease_owner = 'rt-pages', "
            "attempts = attempts + 1, lease_expires_at = now() + interval '30 seconds', "
            "heartbeat_at = now(), started_at = coalesce(started_at, now()), "
            "lease_token_hash = sha256(uuid_send($2::uuid)) WHERE id = $1",
            job_id,
            token,
        )
    claim = _Claim("budget_optimization", job_id, tenant.tenant_id, False, token)
    assert await run_budget_optimization(app_pool, None, "rt-pages", claim) == "succeeded"
    job = (await client.get(f"/v1/budget-optimizations/{job_id}", headers=auth)).json()
    return dict(job["recommendations"])


async def unpaid_codes(owner_pool: asyncpg.Pool) -> set[str]:
    async with owner_pool.acquire() as conn:
        rows = await conn.fetch("SELECT code FROM channel_taxonomy WHERE NOT is_paid")
    return {r["code"] for r in rows}


async def paid_codes(owner_pool: asyncpg.Pool) -> list[str]:
    async with owner_pool.acquire() as conn:
        rows = await conn.fetch("SELECT code FROM channel_taxonomy WHERE is_paid ORDER BY code")
    return [r["code"] for r in rows]


async def test_a_budget_on_the_demo_data_buys_only_paid_channels(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool,
    demo_tenant: CreatedTenant,
) -> None:  # fmt: skip
    """$10,000 over the demo data (where organic, direct, email... earn revenue): no dollar to
    a channel marked is_paid = false, and the left-out ones are named."""
    recs = await _propose(
        client, owner_pool, app_pool, demo_tenant, {"total_budget_usd": "10000.00"}
    )
    unpaid = await unpaid_codes(owner_pool)
    given = {c["channel"] for c in recs["channels"] if Decimal(c["proposed_usd"]) > 0}
    assert given and not given & unpaid, given & unpaid
    assert {e["channel"] for e in recs["excluded_channels"]} & unpaid


async def test_capped_paid_channels_do_not_spill_the_rest_onto_unpaid_ones(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool,
    demo_tenant: CreatedTenant,
) -> None:  # fmt: skip
    """Every paid channel capped at $10 of a $10,000 budget: the remainder must stay
    unallocated (and said so), not flow to organic / direct / email."""
    caps = {code: {"max_usd": "10.00"} for code in await paid_codes(owner_pool)}
    recs = await _propose(
        client,
        owner_pool,
        app_pool,
        demo_tenant,
        {"total_budget_usd": "10000.00", "bounds": caps},
    )
    unpaid = await unpaid_codes(owner_pool)
    given = {c["channel"]: Decimal(c["proposed_usd"]) for c in recs["channels"]}
    assert not {c for c, v in given.items() if v > 0} & unpaid, given
    assert all(v <= Decimal("10.00") for v in given.values()), given
    assert Decimal(recs["allocated_usd"]) <= Decimal(10) * len(caps), recs["allocated_usd"]


# ---- one run per draft, at the API ---------------------------------------------------------


async def test_a_reused_idempotency_key_with_another_question_is_a_409_not_a_second_run(
    client: httpx.AsyncClient, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """The same draft key twice is one run; the same key with an edited question is refused."""
    headers = {"Authorization": f"Bearer {tenant.api_key}", "Idempotency-Key": "draft-1-abcdef"}
    body = {"question": "How did revenue change last week?", "max_cost_usd": "0.10"}
    first, again = [
        await client.post("/v1/investigations", json=body, headers=headers) for _ in range(2)
    ]
    assert first.status_code in (201, 202) and again.status_code == 200, again.text
    assert first.json()["id"] == again.json()["id"]
    other = await client.post(
        "/v1/investigations", json={**body, "question": "Something else?"}, headers=headers
    )
    assert other.status_code == 409 and set(other.json()["error"]) >= {"code", "message"}
    racing = await asyncio.gather(
        *(
            client.post(
                "/v1/investigations",
                json={**body, "question": "Racing drafts?"},
                headers={**headers, "Idempotency-Key": "draft-2-abcdef"},
            )
            for _ in range(8)
        )
    )
    assert {r.status_code for r in racing} <= {200, 201, 202}, [r.text for r in racing]
    assert len({r.json()["id"] for r in racing}) == 1
    assert await count_runs(owner_pool, tenant.tenant_id) == 2


@pytest.mark.parametrize("question", ["\u200b\u200b\u200b\u200b", "   \t\n  ", "ab", "a\x00bc"])
async def test_an_invisible_or_empty_question_is_refused(
    client: httpx.AsyncClient, tenant: CreatedTenant, question: str
) -> None:
    """Zero-width spaces, blanks, too short, NUL: 422 with the error shape, no run."""
    response = await client.post(
        "/v1/investigations",
        json={"question": question},
        headers={"Authorization": f"Bearer {tenant.api_key}", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 422, response.text
    assert set(response.json()["error"]) >= {"code", "message"}


FINANCE_TOKEN = "rt-pages-finance-token-5e4d3c2b1a09"


@pytest.fixture
def live_finance(test_settings: Settings, database_urls: DatabaseUrls) -> Iterator[LiveServer]:
    settings = test_settings.model_copy(update={"finance_api_token": FINANCE_TOKEN})
    with serve_app(settings, database_urls, name="rt-pages-finance") as server:
        yield server


async def test_forgetting_the_finance_token_leaves_no_tenants_figures_in_the_page(
    browser: Browser, live_finance: LiveServer, app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool
) -> None:
    """Every tenant's spend is on the finance page: "Forget token" must take it out of the DOM
    (names, figures, data attributes, chart), not only hide it."""
    month = date(2019, 6, 1)  # a month no other test writes to
    workload = await random_workload(app_pool, owner_pool, month, random.Random(7), tenants=2)
    page = await browser.new_page()
    await page.goto(f"{live_finance.base_url}/finance?month=2019-06#token={FINANCE_TOKEN}")
    await page.wait_for(
        "() => document.body.dataset.state === 'ready'"
        " && document.querySelectorAll('[data-testid=tenant-row]').length >= 2"
    )
    shown = await page.evaluate("document.documentElement.outerHTML")
    assert all(w.name in shown for w in workload)
    await page.click("#forget")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    left = await page.evaluate(
        "JSON.stringify([document.documentElement.outerHTML, Object.values(sessionStorage)])"
    )
    for w in workload:
        assert w.name not in left and str(w.tenant_id) not in left
    assert "data-value" not in await page.evaluate("document.getElementById('content').outerHTML")
    assert FINANCE_TOKEN not in left
    # The token again: the page loads the figures as before.
    await page.type("#token", FINANCE_TOKEN)
    await page.press("Enter")
    await page.wait_for(
        "() => document.body.dataset.state === 'ready'"
        " && document.querySelectorAll('[data-testid=tenant-row]').length >= 2"
    )
    assert page.problems() == []
