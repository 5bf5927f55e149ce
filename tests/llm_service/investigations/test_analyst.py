"""The deterministic analyst on real demo data: each planted anomaly found, its figure stated.

The expected figures are computed here with this test's own SQL (as the owner, tenant named
explicitly), never by the service's queries.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from claimed_runs import claim_of, queue_claimed_run

from llm_service.db.pool import tenant_transaction
from llm_service.demo_data import DemoDataSummary, generate_demo_data
from llm_service.investigations.analyst import plan
from llm_service.investigations.evidence import Evidence
from llm_service.investigations.findings import write_report
from llm_service.investigations.runner import InvestigationRunner
from llm_service.investigations.understanding import ChannelInfo, resolve, scope_of, understand
from llm_service.tenants.service import create_tenant
from llm_service.tools.runner import ToolOutcome

TODAY = date(2026, 12, 2)  # a Wednesday


def ts(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@pytest.fixture(scope="module")
async def planted(owner_pool: asyncpg.Pool) -> tuple[UUID, DemoDataSummary]:
    """A tenant with demo data generated for today (the analyst resolves periods from today)."""
    created = await create_tenant(owner_pool, "analyst-eval")
    async with tenant_transaction(owner_pool, created.tenant_id) as conn:
        summary = await generate_demo_data(conn, created.tenant_id, events=5_000, seed=5)
    return created.tenant_id, summary


def anomaly(summary: DemoDataSummary, kind: str) -> Any:
    return next(a for a in summary.anomalies if a.kind == kind)


async def ask(pool: asyncpg.Pool, tenant_id: UUID, question: str) -> dict[str, Any]:
    run_id = await queue_claimed_run(pool, tenant_id, question)
    status = await InvestigationRunner(pool, None, "test-worker").run(claim_of(run_id))
    assert status == "succeeded"
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT result, degraded FROM investigations WHERE id = $1", run_id
        )
        ids = {
            str(r["id"])
            for r in await conn.fetch(
                "SELECT id FROM investigation_tool_calls WHERE investigation_id = $1", run_id
            )
        }
    assert row["degraded"] is True
    findings = row["result"]["findings"]
    assert findings and all(set(f["evidence"]) <= ids for f in findings)
    return dict(row["result"])


async def test_the_revenue_drop_is_stated_with_its_week_over_week_figure(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, planted: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = planted
    drop = anomaly(summary, "revenue_drop")
    sql = (
        "SELECT coalesce(sum(revenue_cents), 0) FROM attribution_events WHERE tenant_id = $1"
        " AND channel = $2 AND occurred_at >= $3 AND occurred_at < $4"
    )
    week = timedelta(days=7)
    cur = await owner_pool.fetchval(
        sql, tenant_id, drop.channel, ts(drop.start), ts(drop.start + week)
    )
    prev = await owner_pool.fetchval(
        sql, tenant_id, drop.channel, ts(drop.start - week), ts(drop.start)
    )
    assert cur < prev
    result = await ask(app_pool, tenant_id, "What happened to Facebook Ads sales last week?")
    claim = result["findings"][0]["claim"]
    change = f"fell {abs(cur - prev) * 100 / prev:.1f}%"
    assert claim.startswith(drop.channel) and change in claim
    assert f"{prev / 100:,.2f}" in claim and f"{cur / 100:,.2f}" in claim
    assert result["summary"].startswith(claim)  # the answer first


async def test_the_refund_burst_is_found_with_its_count(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, planted: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = planted
    burst = anomaly(summary, "refund_burst")
    start = burst.start

    async def reversals_in_week(monday: date) -> int:
        count: int = await owner_pool.fetchval(
            "SELECT count(*) FROM revenue_state_transitions t"
            " JOIN revenue_ledger l ON l.id = t.ledger_id"
            " JOIN attribution_allocations a ON a.id = l.allocation_id"
            " WHERE t.tenant_id = $1 AND a.channel_code = $2"
            " AND t.to_state IN ('refunded', 'chargeback')"
            " AND t.transitioned_at >= $3 AND t.transitioned_at < $4",
            tenant_id,
            burst.channel,
            ts(monday),
            ts(monday + timedelta(days=7)),
        )
        return count

    reversals = await reversals_in_week(start)
    # A burst: more than any of the four weeks before. (Its size moves with the day the data is
    # generated for: 4 reversals fall inside the week for data generated on 2026-12-08.)
    before = [await reversals_in_week(start - timedelta(days=7 * k)) for k in range(1, 5)]
    assert reversals >= 3 and reversals > max(before), (reversals, before)
    result = await ask(
        app_pool, tenant_id, f"Why were affiliate orders refunded in the week of {start}?"
    )
    claim = result["findings"][0]["claim"]
    assert claim.startswith(f"{burst.channel} had {reversals} refunds and chargebacks")


async def test_the_dead_event_spike_names_its_source_and_count(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, planted: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = planted
    spike = anomaly(summary, "dead_event_spike")
    n = await owner_pool.fetchval(
        "SELECT count(*) FROM dead_events WHERE tenant_id = $1 AND source = $2"
        " AND ingested_at >= $3 AND ingested_at < $4",
        tenant_id,
        spike.source,
        ts(spike.start),
        ts(spike.start + timedelta(days=1)),
    )
    result = await ask(app_pool, tenant_id, f"Were events lost in the pipeline on {spike.start}?")
    claim = result["findings"][0]["claim"]
    assert claim.startswith(f"{spike.source} produced {n:,} of the")


async def test_the_mistagging_is_found_by_the_dates_of_the_events_corrected(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, planted: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = planted
    fix = anomaly(summary, "channel_corrections")
    start, end = fix.start, fix.start + timedelta(days=7)
    events, made_in_week = await owner_pool.fetchrow(
        "SELECT count(*) FILTER (WHERE e.occurred_at >= $3 AND e.occurred_at < $4),"
        " count(*) FILTER (WHERE c.corrected_at >= $3 AND c.corrected_at < $4)"
        " FROM channel_assignment_corrections c JOIN attribution_events e ON e.id = c.entity_id"
        " WHERE c.tenant_id = $1 AND c.entity_type = 'event' AND c.to_channel = $2"
        " AND c.from_channel = 'organic_social'",
        tenant_id,
        fix.channel,
        ts(start),
        ts(end),
    )
    assert events > 0 and made_in_week == 0  # the fix was made after the week asked about
    result = await ask(
        app_pool,
        tenant_id,
        f"Were instagram events mis-tagged as organic social in the week of {start}?",
    )
    claim = result["findings"][0]["claim"]
    assert claim.startswith(
        f"{events} events recorded as organic_social were corrected to {fix.channel}"
    )


async def test_a_window_before_the_data_is_flagged_not_compared_as_zero(
    app_pool: asyncpg.Pool, planted: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, _ = planted
    result = await ask(app_pool, tenant_id, "How did revenue change in the last 60 days?")
    claim = result["findings"][0]["claim"]
    assert "no change is stated" in claim and "unknown, not zero" in claim
    assert "rose" not in claim and "fell" not in claim


# -- understanding the question's words ---------------------------------------------------------

CHANNELS = [
    ChannelInfo("facebook_paid", "Facebook Ads", "paid_social", True),
    ChannelInfo("instagram_paid", "Instagram Ads", "paid_social", True),
    ChannelInfo("google_search_paid", "Google Search Ads", "paid_search", True),
    ChannelInfo("google_shopping", "Google Shopping", "shopping", True),
    ChannelInfo("organic_search", "Organic Search", "organic_search", False),
    ChannelInfo("organic_social", "Organic Social", "organic_social", False),
    ChannelInfo("email", "Email", "email", False),
]


@pytest.mark.parametrize(
    ("text", "channels"),
    [
        ("Why did facebook_paid revenue drop?", ("facebook_paid",)),
        ("what about Facebook Ads", ("facebook_paid",)),
        ("meta ads last week", ("facebook_paid",)),
        ("google shopping sales", ("google_shopping",)),
        ("google ads spend", ("google_search_paid",)),
        ("paid social revenue", ("facebook_paid", "instagram_paid")),
        ("organic social last week", ("organic_social",)),
        ("revenue from organic channels", ("organic_search", "organic_social", "email")),
        (
            "our paid channels",
            ("facebook_paid", "instagram_paid", "google_search_paid", "google_shopping"),
        ),
        ("total revenue", ()),
    ],
)
def test_channels_in_the_users_words(text: str, channels: tuple[str, ...]) -> None:
    assert scope_of(text, CHANNELS).channels == channels


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("last week", date(2026, 11, 23), date(2026, 11, 30)),
        ("the week of 2026-11-09", date(2026, 11, 9), date(2026, 11, 16)),
        ("the week starting 2026-11-09", date(2026, 11, 9), date(2026, 11, 16)),
        ("three weeks ago", date(2026, 11, 9), date(2026, 11, 16)),
        ("on 2026-11-11", date(2026, 11, 11), date(2026, 11, 12)),
        ("on November 11", date(2026, 11, 11), date(2026, 11, 12)),
        ("in October", date(2026, 10, 1), date(2026, 11, 1)),
        ("the last two weeks", date(2026, 11, 19), date(2026, 12, 3)),
        ("the last 30 days", date(2026, 11, 3), date(2026, 12, 3)),
    ],
)
def test_periods_in_words_and_dates(text: str, start: date, end: date) -> None:
    period, named = resolve(text, TODAY)
    assert (period.start, period.end, named) == (start, end, True)


def test_metric_and_topics() -> None:
    q = understand("How many conversions did email have under first touch?", TODAY, CHANNELS)
    assert q.metric == "conversions" and "models" not in q.topics
    q = understand("Which attribution models disagree most?", TODAY, CHANNELS)
    assert "models" in q.topics
    q = understand("Were there chargebacks for affiliates?", TODAY, CHANNELS)
    assert "refunds" in q.topics


def _comparison_out(channels: list[str], *, truncated: bool) -> dict[str, Any]:
    period = {"start": "2026-11-23", "end": "2026-11-30"}
    rows = [
        {"channel": c, "current_revenue_cents": 10_000, "previous_revenue_cents": 20_000}
        for c in channels
    ]
    out: dict[str, Any] = {
        "current": period,
        "previous": {"start": "2026-11-16", "end": "2026-11-23"},
        "totals": {"current_revenue_cents": 99_000, "previous_revenue_cents": 99_000},
        "rows": rows,
    }
    if truncated:
        out |= {"truncated": True, "omitted_rows": 3}
    return out


@pytest.mark.parametrize("truncated", [False, True])
def test_a_family_cut_short_by_the_tools_size_cap_is_not_summed(truncated: bool) -> None:
    """A family's figure is the sum of its channels' rows: when the tool's answer lost one of
    them to its size cap, the finding says the figure is unknown instead of summing the rest."""
    q = understand("Why did paid social revenue fall last week?", TODAY, CHANNELS)
    family = list(q.scope.channels)
    assert len(family) > 1
    calls = [c for c in plan(q) if c.tool == "compare_periods"]
    items = [
        Evidence(
            str(uuid.uuid4()),
            ToolOutcome(
                c.tool,
                c.arguments,
                _comparison_out(family[1:] if truncated else family, truncated=truncated),
                truncated,
                None,
                1,
            ),
        )
        for c in calls
    ]
    claim = write_report(q, calls, items, CHANNELS, "no model").findings[0].claim
    if truncated:
        assert "cannot be stated" in claim and family[0] in claim and "USD" not in claim
    else:
        n = len(family)
        assert f"from {n * 200:,}.00 USD to {n * 100:,}.00 USD" in claim, claim


def test_a_calendar_month_is_compared_with_the_month_before() -> None:
    """ "in October" is measured against September, and said to be month over month."""
    q = understand("How did revenue change in October?", TODAY, CHANNELS)
    answer = next(c for c in plan(q) if c.role == "answer")
    assert (answer.arguments["current_start"], answer.arguments["current_end"]) == (
        "2026-10-01",
        "2026-11-01",
    )
    assert (answer.arguments["previous_start"], answer.arguments["previous_end"]) == (
        "2026-09-01",
        "2026-10-01",
    )
    out = {
        "current": {"start": "2026-10-01", "end": "2026-11-01"},
        "previous": {"start": "2026-09-01", "end": "2026-10-01"},
        "totals": {"current_revenue_cents": 150_00, "previous_revenue_cents": 100_00},
        "rows": [],
    }
    evidence = Evidence("e-1", ToolOutcome(answer.tool, answer.arguments, out, False, None, 1))
    claim = write_report(q, [answer], [evidence], CHANNELS, "no model").findings[0].claim
    assert "rose 50.0% month over month" in claim, claim


def test_last_year_is_compared_with_the_year_before() -> None:
    """ "last year" is 2025, measured against 2024 (366 days: not the 365 just before), and
    said to be year over year."""
    q = understand("How did revenue change last year?", TODAY, CHANNELS)
    answer = next(c for c in plan(q) if c.role == "answer")
    args = answer.arguments
    assert (args["current_start"], args["current_end"]) == ("2025-01-01", "2026-01-01")
    assert (args["previous_start"], args["previous_end"]) == ("2024-01-01", "2025-01-01")
    out = {
        "current": {"start": "2025-01-01", "end": "2026-01-01"},
        "previous": {"start": "2024-01-01", "end": "2025-01-01"},
        "totals": {"current_revenue_cents": 80_00, "previous_revenue_cents": 100_00},
        "rows": [],
    }
    evidence = Evidence("e-1", ToolOutcome(answer.tool, answer.arguments, out, False, None, 1))
    claim = write_report(q, [answer], [evidence], CHANNELS, "no model").findings[0].claim
    assert "fell 20.0% year over year" in claim, claim


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("why did facebok revenue drop last wek", ["No period was recognised", "last 28 days"]),
        ("Tell me a joke", ["No period was recognised", "names nothing the analyst recognises"]),
        ("Why did paid social revenue fall last week?", []),
        ("How many conversions did email have in October?", []),
    ],
)
def test_what_the_question_did_not_say_is_said_not_assumed_silently(
    text: str, said: list[str]
) -> None:
    """A typo or an unknown phrase falls back to defaults: the answer says which."""
    q = understand(text, TODAY, CHANNELS)
    summary = write_report(q, plan(q), [], CHANNELS, "no model").summary
    for words in said:
        assert words in summary, summary
    if not said:
        assert "recognis" not in summary, summary
