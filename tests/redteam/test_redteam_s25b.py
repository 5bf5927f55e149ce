"""Red team s25b: dates with a year, a group's figures as the database's sum, explanations over
no events, and the queue depth series.

Every attack is one test: a plain test held, a strict xfail broke (its reason says how); the
six that broke and were fixed in session 25 say so.
Expected figures come from this file's own SQL, read as llm_app in `tenant_transaction`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import respx

from llm_service.db.pool import tenant_transaction
from llm_service.demo_data import generate_demo_data
from llm_service.errors import InvalidRequest
from llm_service.explanations.resolve import resolve_phrase
from llm_service.investigations import repository
from llm_service.investigations.analyst import plan
from llm_service.investigations.evidence import Evidence
from llm_service.investigations.findings import write_report
from llm_service.investigations.runner import InvestigationRunner
from llm_service.investigations.understanding import ChannelInfo, understand
from llm_service.metrics_repository import queue_depth
from llm_service.periods import EARLIEST_DATE, LATEST_DATE, Period, resolve_named
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from llm_service.tools.runner import ToolOutcome, run_tool
from tests.helpers.served_app import asgi_client
from tests.llm_service.investigations import claimed_runs

TODAY = date(2026, 12, 8)  # a Tuesday
DEFAULT = Period(TODAY - timedelta(days=27), TODAY + timedelta(days=1))
OPENAI_URL = "https://api.openai.com/v1/chat/completions"


def named(text: str, today: date = TODAY) -> tuple[Period, bool]:
    return resolve_named(text, today)


def _sane(period: Period, today: date = TODAY) -> None:
    """What any named period must be: non-empty, within 1970..2099, not past tomorrow."""
    assert period.start < period.end, period
    assert period.start >= EARLIEST_DATE and period.end <= LATEST_DATE, period
    assert period.end <= today + timedelta(days=1), period


# -- 1. dates with a year ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("October 2026", date(2026, 10, 1), date(2026, 11, 1)),
        ("December 2026", date(2026, 12, 1), date(2026, 12, 9)),  # up to today
        ("on 12 October 2025", date(2025, 10, 12), date(2025, 10, 13)),
        ("October 12, 2025", date(2025, 10, 12), date(2025, 10, 13)),
        ("the week of 12 October 2025", date(2025, 10, 12), date(2025, 10, 19)),
        ("week of December 1, 2026", date(2026, 12, 1), date(2026, 12, 8)),
        ("October 2025 to March 2026", date(2025, 10, 1), date(2026, 4, 1)),
        ("from March 2026 to October 2025", date(2025, 10, 1), date(2026, 4, 1)),
        ("oct 2025 - mar 2026", date(2025, 10, 1), date(2026, 4, 1)),
        ("October 2026 vs September 2026", date(2026, 10, 1), date(2026, 11, 1)),
        ("October 2024 vs. September 2024", date(2024, 10, 1), date(2024, 11, 1)),
        (
            "revenue in October 2025 compared with October 2024",
            date(2025, 10, 1),
            date(2025, 11, 1),
        ),
        ("October 2026 to October 2026", date(2026, 10, 1), date(2026, 11, 1)),
        ("October 2026 to March 2027", date(2026, 10, 1), date(2026, 12, 9)),  # up to today
    ],
)
def test_promised_dates_with_a_year_are_read(text: str, start: date, end: date) -> None:
    assert named(text) == (Period(start, end), True)


@pytest.mark.parametrize(
    "text",
    [
        "December 1969",
        "December 1969 to January 1970",
        "on 29 December 1969",
        "1 October 2026 to 15 October 2026",
        "12 October 2025 vs 12 October 2024",
        "0 weeks ago",
        "last 0 weeks",
        "last 0 days",
        "31 February 2026",
        "week of 31 November 2025",
        "October 0000",
        "0 October 2026",
        "October 9999",
        "December 9999",
        "week of 9999-12-27",
        "99 October 2026",
    ],
)
def test_what_names_nothing_falls_back_to_the_default_window(text: str) -> None:
    """1969, two days in words, zero counts, non-days, year 9999: no crash, named False, the
    default window. (Months and days to come were here too; since session 25 they are named
    whole, so that the answer says they have no data: see test_periods.)"""
    assert named(text) == (DEFAULT, False)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("in October", date(2026, 10, 1), date(2026, 11, 1)),
        ("week of 3 March", date(2026, 3, 3), date(2026, 3, 10)),
        ("the week of 2026-11-09", date(2026, 11, 9), date(2026, 11, 16)),
        ("last 7 days", date(2026, 12, 2), date(2026, 12, 9)),
        ("last 30 days", date(2026, 11, 9), date(2026, 12, 9)),
        ("2026-02-01 to 2026-03-01", date(2026, 2, 1), date(2026, 3, 1)),
        ("2026-03-01 to 2026-02-01", date(2026, 2, 1), date(2026, 3, 1)),
        ("on 2026-10-14", date(2026, 10, 14), date(2026, 10, 15)),
        ("12 october", date(2026, 10, 12), date(2026, 10, 13)),
        ("on 11 November", date(2026, 11, 11), date(2026, 11, 12)),
        ("three weeks ago", date(2026, 11, 16), date(2026, 11, 23)),
        ("last week", date(2026, 11, 30), date(2026, 12, 7)),
        ("this month", date(2026, 12, 1), date(2026, 12, 9)),
        ("yesterday", date(2026, 12, 7), date(2026, 12, 8)),
    ],
)
def test_phrases_read_before_are_still_read(text: str, start: date, end: date) -> None:
    assert named(text) == (Period(start, end), True)


@pytest.mark.parametrize(
    "text",
    [
        "the week of 29 December 1969",  # read as the week of 29 December 2025
        "last week of October 2027",  # read as last week
    ],
)
def test_a_rejected_year_is_not_dropped_to_name_another_year(text: str) -> None:
    """A week with a year before 1970 (or one to come, before session 25 named them) named
    nothing in _analyst_phrase, then resolve_period read the same words without their year
    ('week of 12 October') and named that week of another year, named=True: the explanations
    route answered for it."""
    assert named(text) == (DEFAULT, False)


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("the week of 12 October 2027", date(2027, 10, 12)),
        ("the week of 1 January 2030", date(2030, 1, 1)),
    ],
)
def test_a_week_to_come_is_that_week_not_another_years(text: str, start: date) -> None:
    assert named(text) == (Period(start, start + timedelta(days=7)), True)


def test_a_rejected_week_of_2099_does_not_cross_2100() -> None:
    """At the end of 2099 'week of 28 December 2099' (ending in 2100) fell back to the yearless
    reading, the same week: named=True for a period past LATEST_DATE."""
    today = date(2099, 12, 31)
    period, was_named = named("the week of 28 December 2099", today)
    assert not was_named or period.end <= LATEST_DATE


@pytest.mark.parametrize("text", ["the week of 7 December 2026", "the week of 2026-12-07"])
def test_a_week_that_has_begun_does_not_reach_into_the_future(text: str) -> None:
    """Broke (fixed in session 25): a week with its year that had begun ended up to six days in
    the future (a month is cut at today; the ISO 'week of 2026-12-07' did the same)."""
    period, was_named = named(text)
    assert was_named
    _sane(period)


@pytest.mark.parametrize(
    ("iso", "words"),
    [
        ("on 2030-01-01", "on 1 January 2030"),
        ("the week of 2099-12-21", "the week of 21 December 2099"),
    ],
)
def test_a_day_to_come_reads_alike_in_iso_and_in_words(iso: str, words: str) -> None:
    """Broke: an ISO day to come was named and the same day in words was not. Since session
    25 both are named, whole (the answer says they have no data yet)."""
    assert named(iso) == named(words) and named(iso)[1] is True


@pytest.mark.parametrize("text", ["12 October 2025 to March 2026", "October 2025 to 15 March 2026"])
def test_a_day_to_a_month_is_not_read_as_the_one_day(text: str) -> None:
    """Broke (fixed in session 25): a day and a month with years named the one day only."""
    period, was_named = named(text)
    assert not was_named or period.days > 1


@pytest.mark.parametrize(
    "text",
    ["compare October 2026 with September 2026", "October 2026 relative to September 2026"],
)
def test_a_comparison_in_other_words_names_the_first_month(text: str) -> None:
    """Broke (fixed in session 25): 'compare X with Y', 'X relative to Y' read as a range."""
    assert named(text) == (Period(date(2026, 10, 1), date(2026, 11, 1)), True)


def test_three_months_listed_are_not_cut_to_two() -> None:
    """Broke (fixed in session 25): the third of three months listed was dropped."""
    period, was_named = named("October 2025, November 2025 and December 2025")
    assert not was_named or period.end == date(2026, 1, 1)


@pytest.mark.parametrize(
    "text",
    ["since October 2025", "the first week of October 2025", "the last week of October 2025"],
)
def test_words_around_a_month_are_not_ignored(text: str) -> None:
    """Broke (fixed in session 25): 'since October 2025', 'the first/last week of October 2025'
    named October 2025 alone."""
    period, was_named = named(text)
    assert not was_named or period != Period(date(2025, 10, 1), date(2025, 11, 1))


@pytest.mark.parametrize(
    "text",
    [
        "October 2026",
        "October 2025 to March 2026",
        "the week of 12 October 2025",
        "on 12 October 2025",
        "October 2026 vs September 2026",
        "December 2026",
    ],
)
def test_the_analyst_and_the_explanations_route_read_the_same_period(text: str) -> None:
    q = understand(f"Why did revenue change {text}?", TODAY, [])
    assert q.period_named
    assert resolve_phrase(text, TODAY) == q.period


@pytest.mark.parametrize("text", ["January 2020 to March 2026", "October 2024 to March 2026"])
def test_a_range_of_months_over_the_limit_is_refused_by_the_route_not_cut(text: str) -> None:
    assert named(text)[1]
    with pytest.raises(InvalidRequest, match="at most 366"):
        resolve_phrase(text, TODAY)


@pytest.mark.parametrize(
    "text",
    [
        "October 2026 vs",
        "vs October 2026",
        "October 2026 to",
        "October,2026",
        "October 2026 October 2026 October 2026",
        "the week of the week of 12 October 2025",
        "12th October 2025",
        "October 12th, 2025",
        "may 2026 may 2027",
        "week of " * 200 + "12 October 2025",
        "October 2025 " * 500,
    ],
)
def test_odd_phrases_with_years_do_not_crash_and_stay_sane(text: str) -> None:
    period, was_named = named(text)
    if was_named:
        _sane(period)


# -- 2. a group's figures are the database's sum -------------------------------------------------


@pytest.fixture(scope="module")
async def demo(owner_pool: asyncpg.Pool) -> tuple[UUID, list[ChannelInfo], date]:
    created = await create_tenant(owner_pool, f"rt-s25b-{uuid.uuid4().hex[:8]}")
    async with tenant_transaction(owner_pool, created.tenant_id) as conn:
        await generate_demo_data(conn, created.tenant_id, events=10_000, seed=3)
        rows = await repository.active_channels(conn)
    channels = [ChannelInfo(r["code"], r["display_name"], r["family"], r["is_paid"]) for r in rows]
    return created.tenant_id, channels, datetime.now(UTC).date()


def _ts(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


async def _db_sum(
    app_pool: asyncpg.Pool, tenant_id: UUID, codes: list[str], start: str, end: str
) -> int:
    async with tenant_transaction(app_pool, tenant_id) as conn:
        value = await conn.fetchval(
            "SELECT coalesce(sum(revenue_cents), 0) FROM attribution_events"
            " WHERE channel = ANY($1::text[]) AND occurred_at >= $2 AND occurred_at < $3",
            codes,
            _ts(date.fromisoformat(start)),
            _ts(date.fromisoformat(end)),
        )
    return int(value)


def _usd(cents: int) -> str:
    return f"{cents / 100:,.2f} USD"


@pytest.mark.parametrize(
    "question",
    [
        "Why did paid channels revenue fall last week?",
        "Why did revenue of every channel except paid social change last week?",
        "Why did paid social revenue fall last week?",
    ],
)
async def test_a_groups_finding_states_the_databases_sum_when_rows_overflow_the_cap(
    app_pool: asyncpg.Pool,
    demo: tuple[UUID, list[ChannelInfo], date],
    question: str,
) -> None:
    tenant_id, channels, today = demo
    q = understand(question, today, channels)
    assert q.scope.group, q.scope
    calls = plan(q)
    answer = next(c for c in calls if c.role == "answer")
    full = await run_tool(
        app_pool, tenant_id, answer.tool, dict(answer.arguments), max_output_chars=100_000
    )
    assert full.output is not None and not full.truncated, full
    rows = full.output["rows"]
    # A cap that keeps the first half of the rows: the rest overflow it.
    cap = len(json.dumps(full.output)) - sum(len(json.dumps(r)) + 2 for r in rows[1:]) + 40
    outcome = await run_tool(
        app_pool, tenant_id, answer.tool, dict(answer.arguments), max_output_chars=cap
    )
    assert outcome.error is None and outcome.output is not None, outcome
    out = outcome.output
    assert outcome.truncated and len(out.get("rows") or []) < len(q.scope.channels), out
    assert sorted(out["channels"]) == sorted(q.scope.channels)
    a = answer.arguments
    cur = await _db_sum(
        app_pool, tenant_id, list(q.scope.channels), a["current_start"], a["current_end"]
    )
    prev = await _db_sum(
        app_pool, tenant_id, list(q.scope.channels), a["previous_start"], a["previous_end"]
    )
    assert out["channels_total"]["current_revenue_cents"] == cur
    assert out["channels_total"]["previous_revenue_cents"] == prev
    report = write_report(q, [answer], [Evidence("e-1", outcome)], channels, "no model")
    claim = report.findings[0].claim
    assert f"from {_usd(prev)} to {_usd(cur)}" in claim, claim


async def test_duplicate_and_unknown_codes_do_not_change_the_sum(
    app_pool: asyncpg.Pool, demo: tuple[UUID, list[ChannelInfo], date]
) -> None:
    tenant_id, channels, today = demo
    codes = [c.code for c in channels if c.is_paid][:3]
    start, end = (today - timedelta(days=14)).isoformat(), (today - timedelta(days=7)).isoformat()
    asked = ",".join([*codes, codes[0], codes[1], "no_such_channel", codes[0]])
    outcome = await run_tool(
        app_pool,
        tenant_id,
        "compare_periods",
        {"current_start": start, "current_end": end, "channels": asked, "limit": 100},
    )
    assert outcome.error is None and outcome.output is not None, outcome
    total = outcome.output["channels_total"]
    assert total["current_revenue_cents"] == await _db_sum(app_pool, tenant_id, codes, start, end)
    assert outcome.output["channels"].count(codes[0]) == 1


@pytest.mark.parametrize("limit", [1, 2])
async def test_a_limit_below_the_group_size_gives_no_sum(
    app_pool: asyncpg.Pool, demo: tuple[UUID, list[ChannelInfo], date], limit: int
) -> None:
    """channels_total is None when the limit leaves channels out (never the sum of the first
    `limit` rows), and more_rows says the rows were cut."""
    tenant_id, channels, today = demo
    codes = [c.code for c in channels if c.is_paid]
    assert len(codes) > limit + 1
    start, end = (today - timedelta(days=28)).isoformat(), today.isoformat()
    outcome = await run_tool(
        app_pool,
        tenant_id,
        "compare_periods",
        {"current_start": start, "current_end": end, "channels": ",".join(codes), "limit": limit},
    )
    assert outcome.output is not None, outcome
    assert outcome.output["channels_total"] is None
    assert outcome.output["more_rows"] is True
    assert len(outcome.output["rows"]) == limit


async def test_a_model_call_for_other_channels_is_not_used_as_the_groups_figure(
    app_pool: asyncpg.Pool, demo: tuple[UUID, list[ChannelInfo], date]
) -> None:
    """The model asked compare_periods for paid social plus one more channel, same period and
    limit: its channels_total is not the group's. The finding uses the plan's own call; every
    USD figure the finding states for the group is the database's."""
    tenant_id, channels, today = demo
    q = understand("Why did paid social revenue fall last week?", today, channels)
    calls = plan(q)
    answer = next(c for c in calls if c.role == "answer")
    other = next(c.code for c in channels if c.code not in q.scope.channels)
    model_args = dict(answer.arguments) | {"channels": ",".join([*q.scope.channels, other])}
    model_call = await run_tool(app_pool, tenant_id, "compare_periods", model_args)
    planned = await run_tool(app_pool, tenant_id, answer.tool, dict(answer.arguments))
    report = write_report(
        q,
        [answer],
        [Evidence("model", model_call), Evidence("plan", planned)],
        channels,
        "no model",
    )
    first = report.findings[0]
    assert first.evidence == ["plan"], first
    a = answer.arguments
    cur = await _db_sum(
        app_pool, tenant_id, list(q.scope.channels), a["current_start"], a["current_end"]
    )
    prev = await _db_sum(
        app_pool, tenant_id, list(q.scope.channels), a["previous_start"], a["previous_end"]
    )
    assert f"from {_usd(prev)} to {_usd(cur)}" in first.claim, first.claim


async def test_a_model_call_for_the_group_with_a_low_limit_is_not_summed(
    app_pool: asyncpg.Pool, demo: tuple[UUID, list[ChannelInfo], date]
) -> None:
    """Evidence for exactly the group's channels, cut by `limit` (not by size: truncated is
    false), given to the group's finding: it must not state the sum of the rows left."""
    tenant_id, channels, today = demo
    q = understand("Why did paid channels revenue fall last week?", today, channels)
    answer = next(c for c in plan(q) if c.role == "answer")
    args = dict(answer.arguments) | {"limit": 2}
    outcome = await run_tool(app_pool, tenant_id, "compare_periods", args)
    assert outcome.output is not None and not outcome.truncated
    assert outcome.output["more_rows"] is True
    # The evidence under the plan's own key, as if the plan had asked with limit 2.
    report = write_report(
        q, [answer], [Evidence("e-1", _as(outcome, answer.arguments))], channels, "x"
    )
    claim = report.findings[0].claim
    a = answer.arguments
    cur = await _db_sum(
        app_pool, tenant_id, list(q.scope.channels), a["current_start"], a["current_end"]
    )
    prev = await _db_sum(
        app_pool, tenant_id, list(q.scope.channels), a["previous_start"], a["previous_end"]
    )
    rows = outcome.output["rows"]
    partial = (
        sum(r["previous_revenue_cents"] for r in rows),
        sum(r["current_revenue_cents"] for r in rows),
    )
    assert partial != (prev, cur)
    assert f"from {_usd(partial[0])} to {_usd(partial[1])}" not in claim, claim


def _as(outcome: ToolOutcome, arguments: dict[str, Any]) -> ToolOutcome:
    return replace(outcome, arguments=dict(arguments))


# -- 3. explanations over no events --------------------------------------------------------------

EMPTY = {"start": "2026-10-05", "end": "2026-10-12"}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _model_says(answer: dict[str, Any]) -> Any:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-rt-s25b",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": json.dumps(answer)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140},
            },
        )

    return respond


_NO_FIGURE = re.compile(r"\b0\.00\b|\bwas 0\b")


@pytest.mark.parametrize("channel", [None, "facebook_paid"])
@pytest.mark.parametrize("metric", [None, "attributed_revenue", "conversions"])
async def test_no_events_without_a_model_says_the_figure_cannot_be_stated(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    channel: str | None,
    metric: str | None,
) -> None:
    body: dict[str, Any] = {"subject": "channel_performance", "period": EMPTY}
    if channel:
        body["channel"] = channel
    if metric:
        body["metric"] = metric
    settings = test_settings.model_copy(update={"llm_model": None})
    async with asgi_client(settings, app_pool) as http:
        r = await http.post("/v1/explanations", json=body, headers=_bearer(tenant.api_key))
    assert r.status_code == 200, r.text
    explanation = r.json()["explanation"]
    assert explanation["confidence"] == "low", explanation
    assert "cannot be stated" in explanation["summary"], explanation
    assert not _NO_FIGURE.search(explanation["summary"]), explanation


@pytest.mark.parametrize("channel", [None, "facebook_paid"])
async def test_no_events_with_a_confident_model_is_still_low(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
    channel: str | None,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = test_settings.model_copy(update={"llm_model": "openai/gpt-4o-mini"})
    body: dict[str, Any] = {"subject": "channel_performance", "period": "October 2025"}
    if channel:
        body["channel"] = channel
    answer = {"summary": "Revenue was 0.00 USD: nothing sold.", "confidence": "high"}
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=_model_says(answer))
        async with asgi_client(settings, app_pool) as http:
            r = await http.post("/v1/explanations", json=body, headers=_bearer(tenant.api_key))
            again = await http.post("/v1/explanations", json=body, headers=_bearer(tenant.api_key))
    assert r.status_code == 200 and again.status_code == 200, r.text
    assert route.call_count >= 1
    first, second = r.json(), again.json()
    assert not first["degraded"], first
    assert first["explanation"]["confidence"] == "low", first
    assert second["explanation"]["confidence"] == "low", second  # the cached one too
    # What the model was told: every figure unknown.
    sent = route.calls[0].request.content.decode()
    assert "unknown, not zero" in sent


# -- 4. queue depth series -----------------------------------------------------------------------

SERIES = {
    ("investigation", "queued"),
    ("investigation", "running"),
    ("budget_optimization", "queued"),
    ("budget_optimization", "running"),
}
_DEPTH = re.compile(r"^llm_service_queue_depth\{([^}]*)\} (\S+)$", re.M)


def _series(text: str) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for labels, value in _DEPTH.findall(text):
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = (pairs["kind"], pairs["status"])
        assert key not in found, text
        found[key] = float(value)
    return found


async def test_metrics_have_every_kind_and_live_status_series(
    test_settings: Settings, app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool
) -> None:
    async with asgi_client(test_settings, app_pool) as http:
        r = await http.get("/metrics")
    assert r.status_code == 200
    series = _series(r.text)
    assert set(series) == SERIES, series
    counts = {
        (k, s): n
        for k, s, n in await owner_pool.fetch("SELECT kind, status, runs FROM fn_queue_depth()")
    }
    assert all(v >= 0 for v in series.values())
    assert set(counts) <= SERIES


class _IdleConn:
    async def fetch(self, query: str) -> list[dict[str, Any]]:
        return []


class _OneKindConn:
    async def fetch(self, query: str) -> list[dict[str, Any]]:
        return [{"kind": "investigation", "status": "queued", "runs": 3}]


async def test_an_idle_queue_is_four_zero_series() -> None:
    rows = await queue_depth(_IdleConn())  # type: ignore[arg-type]
    assert {(k, s): n for k, s, n in rows} == dict.fromkeys(SERIES, 0)
    rows = await queue_depth(_OneKindConn())  # type: ignore[arg-type]
    assert {(k, s): n for k, s, n in rows} == dict.fromkeys(SERIES, 0) | {
        ("investigation", "queued"): 3
    }


async def test_a_whole_run_states_the_groups_database_sum(
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    demo: tuple[UUID, list[ChannelInfo], date],
) -> None:
    """The deterministic analyst end to end (InvestigationRunner, no model): the paid channels'
    finding states SUM(revenue_cents) over those channels for both weeks."""
    tenant_id, channels, today = demo
    question = "Why did paid channels revenue fall last week?"
    claimed_runs.owner = owner_pool
    try:
        run_id = await claimed_runs.queue_claimed_run(app_pool, tenant_id, question)
        runner = InvestigationRunner(app_pool, None, "test-worker")
        assert await runner.run(claimed_runs.claim_of(run_id)) == "succeeded"
    finally:
        claimed_runs.owner = None
    async with tenant_transaction(app_pool, tenant_id) as conn:
        result = await conn.fetchval("SELECT result FROM investigations WHERE id = $1", run_id)
    q = understand(question, today, channels)
    answer = next(c for c in plan(q) if c.role == "answer").arguments
    codes = list(q.scope.channels)
    cur = await _db_sum(app_pool, tenant_id, codes, answer["current_start"], answer["current_end"])
    prev = await _db_sum(
        app_pool, tenant_id, codes, answer["previous_start"], answer["previous_end"]
    )
    claim = result["findings"][0]["claim"]
    assert f"from {_usd(prev)} to {_usd(cur)}" in claim, claim


@pytest.mark.parametrize("period", ["the week of 29 December 1969", "week of 31 November 2025"])
async def test_the_route_refuses_a_dated_phrase_that_names_nothing(
    test_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant, period: str
) -> None:
    settings = test_settings.model_copy(update={"llm_model": None})
    body = {"subject": "channel_performance", "period": period}
    async with asgi_client(settings, app_pool) as http:
        r = await http.post("/v1/explanations", json=body, headers=_bearer(tenant.api_key))
    assert r.status_code == 422, r.text
    q = understand(f"How did revenue do {period}?", TODAY, [])
    assert not q.period_named


@pytest.mark.parametrize("period", ["January 2027", "the week of 12 October 2027"])
async def test_the_route_answers_a_period_to_come_as_without_data(
    test_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant, period: str
) -> None:
    """A period still to come is named (not a 422 saying no period was read): the answer says
    its figure cannot be stated, confidence low, and states no 0.00."""
    settings = test_settings.model_copy(update={"llm_model": None})
    body = {"subject": "channel_performance", "period": period}
    async with asgi_client(settings, app_pool) as http:
        r = await http.post("/v1/explanations", json=body, headers=_bearer(tenant.api_key))
    assert r.status_code == 200, r.text
    explanation = r.json()["explanation"]
    assert "cannot be stated" in explanation["summary"], explanation
    assert "0.00" not in explanation["summary"] and explanation["confidence"] == "low"
    assert understand(f"How did revenue do {period}?", TODAY, []).period_named
