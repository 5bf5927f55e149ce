"""The tool runner as the investigation loop uses it: real data, the application role, RLS.

Covers: every tool on generated demo data, read-only transactions, tenant isolation, the
statement timeout, row caps and output truncation, PII redaction of free text, errors for bad
calls (never exceptions), concurrency, and recording in investigation_tool_calls.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from llm_service.analytics import (
    channel_queries,
    data_quality_queries,
    fingerprint_queries,
    ledger_queries,
    shared_queries,
    trend_queries,
)
from llm_service.analytics.models import Result
from llm_service.db.pool import presenting_run_token, tenant_transaction
from llm_service.demo_data import generate_demo_data
from llm_service.tenants.service import CreatedTenant, create_tenant
from llm_service.tools import specs
from llm_service.tools.output import cap_output
from llm_service.tools.repository import list_tool_calls, record_tool_call
from llm_service.tools.runner import ToolOutcome, run_tool
from llm_service.tools.specs import TOOLS, DeadEventSummaryArgs, ToolSpec
from tests.helpers.app_role import lease_run

P = {"start": "2025-03-01", "end": "2025-03-08"}
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def at(day: int, hour: int = 12) -> datetime:
    """A UTC instant in March 2025."""
    return datetime(2025, 3, day, hour, tzinfo=UTC)


def arguments_for(name: str, start: date, end: date) -> dict[str, Any]:
    """Valid arguments of a tool over [start, end)."""
    if name == "compare_periods":
        return {"current_start": start.isoformat(), "current_end": end.isoformat()}
    return {"start": start.isoformat(), "end": end.isoformat()}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    """A tenant with generated demo data and the days it covers, [start, end)."""

    tenant_id: UUID
    start: date
    end: date


@pytest.fixture(scope="module")
async def demo(owner_pool: asyncpg.Pool) -> Demo:
    """90 days of realistic synthetic data for one tenant (shared by this module's tests)."""
    created = await create_tenant(owner_pool, f"tools-demo-{uuid4().hex[:8]}")
    async with tenant_transaction(owner_pool, created.tenant_id) as conn:
        await conn.execute("SET LOCAL statement_timeout = 0")
        summary = await generate_demo_data(conn, created.tenant_id, events=10_000, seed=11)
    return Demo(created.tenant_id, summary.start_date, summary.end_date + timedelta(days=1))


async def _event(conn: asyncpg.Connection, tenant_id: UUID, channel: str, cents: int) -> UUID:
    event_id: UUID = await conn.fetchval(
        """
        INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type,
                                        channel, revenue_cents, idempotency_key)
        VALUES ($1, $2, $2, 'purchase', $3, $4, $5) RETURNING id
        """,
        tenant_id,
        at(2),
        channel,
        cents,
        uuid4().hex,
    )
    return event_id


async def _allocation(
    conn: asyncpg.Connection, tenant_id: UUID, event_id: UUID, channel: str, cents: int
) -> UUID:
    alloc_id: UUID = await conn.fetchval(
        """
        INSERT INTO attribution_allocations (tenant_id, event_id, channel_code,
            allocated_revenue_cents, allocation_ratio, model_type)
        VALUES ($1, $2, $3, $4, 1, 'last_touch') RETURNING id
        """,
        tenant_id,
        event_id,
        channel,
        cents,
    )
    return alloc_id


async def _ledger(
    conn: asyncpg.Connection, tenant_id: UUID, order_id: str, alloc_id: UUID, cents: int
) -> UUID:
    ledger_id: UUID = await conn.fetchval(
        """
        INSERT INTO revenue_ledger (tenant_id, transaction_id, order_id, allocation_id, state,
                                    amount_cents, revenue_cents, posted_at)
        VALUES ($1, $2, $3, $4, 'captured', $5, $5, $6) RETURNING id
        """,
        tenant_id,
        f"tx-{uuid4().hex[:8]}",
        order_id,
        alloc_id,
        cents,
        at(2, 13),
    )
    return ledger_id


async def seed_with_pii(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    """A week of data whose free text holds personal data, in every column a tool returns."""
    event = await _event(conn, tenant_id, "facebook_paid", 10_000)
    alloc = await _allocation(conn, tenant_id, event, "facebook_paid", 10_000)
    ledger = await _ledger(conn, tenant_id, "A-1001/jane.doe@example.com", alloc, 10_000)
    await conn.execute(
        """
        UPDATE revenue_ledger SET state = 'refunded', metadata = jsonb_build_object(
            'state_change_reason', 'refund requested by jane.doe@example.com, +1 415 555 2671')
        WHERE id = $1
        """,
        ledger,
    )
    await conn.execute(
        "UPDATE revenue_state_transitions SET transitioned_at = $2 WHERE ledger_id = $1",
        ledger,
        at(3),
    )
    await conn.execute(
        """
        INSERT INTO dead_events (tenant_id, source, error_type, error_message, ingested_at,
                                 raw_payload)
        VALUES ($1, 'web_sdk', 'schema_validation',
                'rejected payload from bob.smith@example.org (ip 203.0.113.9)', $2,
                '{"customer": {"email": "bob.smith@example.org"}}')
        """,
        tenant_id,
        at(4),
    )
    await conn.execute(
        """
        INSERT INTO channel_assignment_corrections (tenant_id, entity_type, entity_id,
            from_channel, to_channel, corrected_by, corrected_at, reason)
        VALUES ($1, 'event', $2, 'facebook_paid', 'email', 'analyst', $3,
                'alice@example.net said the order came from the newsletter')
        """,
        tenant_id,
        event,
        at(5),
    )
    await conn.execute(
        """
        INSERT INTO reconciliation_runs (tenant_id, state, error_message, created_at)
        VALUES ($1, 'failed', 'stripe rejected the key of ops@example.com', $2)
        """,
        tenant_id,
        at(6),
    )


async def seed_other(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    """The other tenant: a large tiktok_paid order in the same week."""
    event = await _event(conn, tenant_id, "tiktok_paid", 777_700)
    alloc = await _allocation(conn, tenant_id, event, "tiktok_paid", 777_700)
    await _ledger(conn, tenant_id, "o-other-tenant", alloc, 777_700)


@pytest.fixture
async def pii_tenant(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> tuple[UUID, UUID]:
    """(tenant with PII in its free text, another tenant with data in the same week)."""
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await seed_with_pii(conn, tenant.tenant_id)
    async with tenant_transaction(owner_pool, other_tenant.tenant_id) as conn:
        await seed_other(conn, other_tenant.tenant_id)
    return tenant.tenant_id, other_tenant.tenant_id


# --------------------------------------------------------------------------------------------
# Every tool on realistic data
# --------------------------------------------------------------------------------------------


async def test_every_tool_runs_on_demo_data(app_pool: asyncpg.Pool, demo: Demo) -> None:
    start = demo.end - timedelta(days=28)
    outcomes = {
        name: await run_tool(app_pool, demo.tenant_id, name, arguments_for(name, start, demo.end))
        for name in TOOLS
    }
    for name, outcome in outcomes.items():
        assert outcome.error is None, (name, outcome.error)
        assert outcome.output is not None and outcome.name == name
        assert 0 <= outcome.duration_ms < 10_000
        text = json.dumps(outcome.output)
        assert len(text) <= 6000
        assert not EMAIL_RE.search(text), name
        assert "metadata" not in text and "raw_payload" not in text

    perf = outcomes["channel_performance"].output
    assert perf is not None and perf["total_attributed_revenue_cents"] > 0
    assert len(perf["rows"]) >= 5
    shares = sum((Decimal(r["attributed_share_pct"]) for r in perf["rows"]), Decimal(0))
    assert abs(shares - 100) < Decimal("0.2")
    assert all(re.fullmatch(specs.CHANNEL_PATTERN, r["channel"]) for r in perf["rows"])
    comparison = outcomes["compare_periods"].output
    assert comparison is not None and comparison["totals"]["current_revenue_cents"] > 0
    assert comparison["previous"]["end"] == comparison["current"]["start"]
    changes = [abs(r["revenue_change_cents"]) for r in comparison["rows"]]
    assert changes == sorted(changes, reverse=True)
    refunds = outcomes["revenue_state_changes"].output
    assert refunds is not None and {s["to_state"] for s in refunds["by_state"]} <= {
        "refunded",
        "chargeback",
    }
    dead = outcomes["dead_event_summary"].output
    assert dead is not None and dead["total_events"] > 0 and dead["groups"]
    models = outcomes["compare_attribution_models"].output
    assert models is not None and {"last_touch", "first_touch"} <= set(models["model_types"])
    orders = outcomes["top_orders"].output
    assert orders is not None and len(orders["orders"]) == 10 and orders["more_rows"]
    amounts = [o["amount_cents"] for o in orders["orders"]]
    assert amounts == sorted(amounts, reverse=True)
    recon = outcomes["reconciliation_status"].output
    assert recon is not None and recon["ledger_rows"] > 0 and recon["event_purchases"] > 0


async def test_compare_periods_keeps_the_channels_asked_for_and_totals_over_all(
    app_pool: asyncpg.Pool, demo: Demo
) -> None:
    """`channels` (codes separated by commas) keeps exactly those channels' rows, complete (no
    size cap cuts them), each as the unfiltered answer has it; the totals stay over all."""
    start = demo.end - timedelta(days=28)
    base = arguments_for("compare_periods", start, demo.end) | {"limit": 100}
    every = await run_tool(app_pool, demo.tenant_id, "compare_periods", base)
    assert every.output is not None and every.truncated  # all channels overflow the cap
    async with tenant_transaction(app_pool, demo.tenant_id) as conn:
        family = [
            r["code"]
            for r in await conn.fetch(
                "SELECT code FROM channel_taxonomy WHERE family = 'paid_social' ORDER BY code"
            )
        ]
    asked = await run_tool(
        app_pool,
        demo.tenant_id,
        "compare_periods",
        base | {"channels": " ,".join([*family, family[0], "no_such_channel"])},
    )
    assert asked.error is None and asked.output is not None and not asked.truncated
    rows = {r["channel"]: r for r in asked.output["rows"]}
    assert sorted(rows) == family
    assert asked.output["channels"] == [*family, "no_such_channel"]
    assert asked.output["totals"] == every.output["totals"]
    async with tenant_transaction(app_pool, demo.tenant_id) as conn:
        for code, row in rows.items():
            revenue = await conn.fetchval(
                "SELECT coalesce(sum(revenue_cents), 0) FROM attribution_events "
                "WHERE channel = $1 AND occurred_at >= $2 AND occurred_at < $3",
                code,
                start,
                demo.end,
            )
            assert row["current_revenue_cents"] == revenue


async def test_compare_periods_sums_the_channels_asked_for_even_when_rows_are_cut(
    app_pool: asyncpg.Pool, demo: Demo
) -> None:
    """`channels_total` is the database's sum over the channels asked for: whole when the size
    cap cuts the rows (every channel asked for), the channel list kept whole; None when the
    row limit leaves some of them out."""
    start = demo.end - timedelta(days=28)
    base = arguments_for("compare_periods", start, demo.end) | {"limit": 100}
    async with tenant_transaction(app_pool, demo.tenant_id) as conn:
        codes = [r["code"] for r in await conn.fetch("SELECT code FROM channel_taxonomy")]
        revenue = await conn.fetchval(
            "SELECT coalesce(sum(revenue_cents), 0) FROM attribution_events "
            "WHERE channel = ANY($1::text[]) AND occurred_at >= $2 AND occurred_at < $3",
            codes,
            start,
            demo.end,
        )
    every = await run_tool(
        app_pool, demo.tenant_id, "compare_periods", base | {"channels": ",".join(codes)}
    )
    assert every.output is not None and every.truncated  # the rows overflow the cap
    assert every.output["channels"] == codes  # the list asked for is not cut
    assert every.output["channels_total"]["current_revenue_cents"] == revenue > 0
    limited = await run_tool(
        app_pool,
        demo.tenant_id,
        "compare_periods",
        base | {"channels": ",".join(codes), "limit": 2},
    )
    assert limited.output is not None and limited.output["more_rows"] is True
    assert limited.output["channels_total"] is None


async def test_tools_run_concurrently_each_on_its_own_connection(
    app_pool: asyncpg.Pool, demo: Demo
) -> None:
    start = demo.end - timedelta(days=14)
    calls = [(name, arguments_for(name, start, demo.end)) for name in TOOLS] * 2
    outcomes = await asyncio.gather(
        *(run_tool(app_pool, demo.tenant_id, name, args) for name, args in calls)
    )
    assert [o.name for o in outcomes] == [name for name, _ in calls]
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    # Same call, same answer, whatever ran beside it.
    half = len(TOOLS)
    assert [o.output for o in outcomes[:half]] == [o.output for o in outcomes[half:]]


# --------------------------------------------------------------------------------------------
# Read-only, tenant-scoped
# --------------------------------------------------------------------------------------------


async def test_tool_transactions_are_read_only(
    app_pool: asyncpg.Pool, pii_tenant: tuple[UUID, UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, _ = pii_tenant
    async with tenant_transaction(app_pool, tenant_id, readonly=True) as conn:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute(
                "INSERT INTO dead_events (tenant_id, source, error_type, error_message) "
                "VALUES ($1, 's', 'e', 'm')",
                tenant_id,
            )

    # Even a tool that tried to write could not: the runner's transaction is READ ONLY.
    async def write(conn: asyncpg.Connection, args: Any) -> Result:
        await conn.execute(
            "INSERT INTO dead_events (tenant_id, source, error_type, error_message) "
            "VALUES (nullif(current_setting('app.current_tenant_id', true), '')::uuid, "
            "'s', 'e', 'm')"
        )
        raise AssertionError("the insert must fail")

    monkeypatch.setitem(
        TOOLS, "write_attempt", ToolSpec("write_attempt", "x", DeadEventSummaryArgs, write)
    )
    outcome = await run_tool(app_pool, tenant_id, "write_attempt", P)
    assert outcome.error == "the query failed in the database (25006)"  # read_only_sql_transaction
    assert outcome.output is None
    async with tenant_transaction(app_pool, tenant_id, readonly=True) as conn:
        assert await conn.fetchval("SELECT count(*) FROM dead_events") == 1


def test_the_tools_only_read() -> None:
    for spec in TOOLS.values():
        assert not any(
            p in spec.args_model.model_fields for p in ("id", "tenant_id", "ledger_id")
        ), spec.name
    modules = (
        shared_queries,
        channel_queries,
        trend_queries,
        ledger_queries,
        data_quality_queries,
        fingerprint_queries,
    )
    writes = {"INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "SET"}
    for module in modules:
        for name in dir(module):
            value = getattr(module, name)
            if name.isupper() and isinstance(value, str) and "SELECT" in value:
                words = set(re.findall(r"[A-Z]+", value))
                assert not words & writes, name
                assert value.lstrip().startswith(("WITH", "SELECT")), name


async def test_other_tenants_rows_are_unreachable(
    app_pool: asyncpg.Pool, pii_tenant: tuple[UUID, UUID]
) -> None:
    tenant_id, other_id = pii_tenant
    only_other = {**P, "channel": "tiktok_paid"}
    orders = await run_tool(app_pool, tenant_id, "top_orders", only_other)
    assert orders.error is None and orders.output is not None
    assert orders.output["orders"] == []
    perf = await run_tool(app_pool, tenant_id, "channel_performance", only_other)
    assert perf.output is not None and perf.output["rows"] == []
    everything = await asyncio.gather(
        *(run_tool(app_pool, tenant_id, name, arguments_for(name, date(2025, 3, 1),
                                                             date(2025, 3, 8)))
          for name in TOOLS)
    )  # fmt: skip
    for outcome in everything:
        text = json.dumps(outcome.output)
        assert "o-other-tenant" not in text and "777700" not in text, outcome.name
    # The other tenant does see its own order: the data is there, RLS keeps it apart.
    theirs = await run_tool(app_pool, other_id, "top_orders", only_other)
    assert theirs.output is not None
    assert [o["order_id"] for o in theirs.output["orders"]] == ["o-other-tenant"]


# --------------------------------------------------------------------------------------------
# Limits: statement timeout, row caps, output size
# --------------------------------------------------------------------------------------------


async def test_statement_timeout_holds(app_pool: asyncpg.Pool, demo: Demo) -> None:
    args = arguments_for("compare_attribution_models", demo.end - timedelta(days=366), demo.end)
    outcome = await run_tool(
        app_pool, demo.tenant_id, "compare_attribution_models", args, statement_timeout_ms=1
    )
    assert outcome.error is not None and "took too long" in outcome.error
    assert "Traceback" not in outcome.error and outcome.output is None
    # SET LOCAL: the pool's connections keep their own timeout afterwards.
    for _ in range(3):
        async with tenant_transaction(app_pool, demo.tenant_id, readonly=True) as conn:
            assert await conn.fetchval("SHOW statement_timeout") != "1ms"
    again = await run_tool(app_pool, demo.tenant_id, "compare_attribution_models", args)
    assert again.error is None


async def test_row_caps_hold(app_pool: asyncpg.Pool, demo: Demo) -> None:
    args = arguments_for("top_orders", demo.start, demo.end)
    three = await run_tool(app_pool, demo.tenant_id, "top_orders", {**args, "limit": 3})
    assert three.output is not None and len(three.output["orders"]) == 3
    assert three.output["more_rows"] is True and three.truncated is False
    too_many = await run_tool(app_pool, demo.tenant_id, "top_orders", {**args, "limit": 51})
    assert too_many.error is not None and "limit" in too_many.error
    perf = await run_tool(app_pool, demo.tenant_id, "channel_performance", {**args, "limit": 2})
    assert perf.output is not None and len(perf.output["rows"]) == 2


async def test_output_is_truncated_to_valid_json(app_pool: asyncpg.Pool, demo: Demo) -> None:
    args = arguments_for("channel_performance", demo.start, demo.end)
    full = await run_tool(app_pool, demo.tenant_id, "channel_performance", args)
    small = await run_tool(
        app_pool, demo.tenant_id, "channel_performance", args, max_output_chars=900
    )
    assert full.output is not None and small.output is not None
    assert full.truncated is False and small.truncated is True
    text = json.dumps(small.output)
    assert len(text) <= 900
    shown = json.loads(text)
    assert shown["truncated"] is True
    assert shown["omitted_rows"] == len(full.output["rows"]) - len(shown["rows"]) > 0
    assert shown["rows"] == full.output["rows"][: len(shown["rows"])]
    assert shown["total_attributed_revenue_cents"] == full.output["total_attributed_revenue_cents"]


def test_cap_output_drops_rows_from_the_longest_list() -> None:
    output: dict[str, Any] = {
        "period": {"start": "2025-03-01", "end": "2025-03-08"},
        "by_state": [{"n": i} for i in range(2)],
        "by_day": [{"day": f"2025-03-{i:02d}", "n": i} for i in range(1, 31)],
        "more_rows": False,
    }
    assert cap_output(output, 10_000) == (output, False)
    for limit in (150, 200, 300, 500, 900):
        capped, cut = cap_output(output, limit)
        assert cut is True and len(json.dumps(capped)) <= limit
        kept = len(capped.get("by_day", [])) + len(capped.get("by_state", []))
        assert capped["omitted_rows"] == 32 - kept
        assert capped.get("by_day", []) == output["by_day"][: len(capped.get("by_day", []))]
    tiny, cut = cap_output(output, 60)
    assert cut is True and tiny["truncated"] is True and "note" in tiny
    assert output["by_day"][-1] == {"day": "2025-03-30", "n": 30}  # the input is not modified


def test_cap_output_keeps_lists_of_plain_values_whole() -> None:
    """The channels asked for and the warnings are what the answer is about, not rows."""
    output: dict[str, Any] = {
        "rows": [{"channel": f"c{i}", "n": i} for i in range(40)],
        "channels": [f"c{i}" for i in range(40)],
        "warnings": ["the previous period is partly before the data"],
    }
    capped, cut = cap_output(output, 900)
    assert cut is True and len(json.dumps(capped)) <= 900
    assert capped["channels"] == output["channels"] and capped["warnings"] == output["warnings"]
    assert capped["omitted_rows"] == 40 - len(capped["rows"]) > 0


# --------------------------------------------------------------------------------------------
# PII
# --------------------------------------------------------------------------------------------


async def test_personal_data_in_free_text_is_redacted(
    app_pool: asyncpg.Pool, pii_tenant: tuple[UUID, UUID]
) -> None:
    tenant_id, _ = pii_tenant
    cases = {
        "top_orders": ("A-1001/jane.doe@example.com", "[REDACTED:email]"),
        "revenue_state_changes": ("jane.doe@example.com", "[REDACTED:phone]"),
        "dead_event_summary": ("bob.smith@example.org", "[REDACTED:ip_address]"),
        "channel_corrections": ("alice@example.net", "[REDACTED:email]"),
        "reconciliation_status": ("ops@example.com", "[REDACTED:email]"),
    }
    for name, (raw, placeholder) in cases.items():
        outcome = await run_tool(app_pool, tenant_id, name, P)
        assert outcome.error is None, outcome.error
        text = json.dumps(outcome.output)
        assert raw not in text, name
        assert not EMAIL_RE.search(text), name
        assert "415 555 2671" not in text and "203.0.113.9" not in text
        assert placeholder in text and "[REDACTED:email]" in text, (name, text)
        assert outcome.pii_findings >= 1
    # The redaction keeps the rest of the row: the amounts and the state are still there.
    orders = await run_tool(app_pool, tenant_id, "top_orders", P)
    assert orders.output is not None
    [order] = orders.output["orders"]
    assert order["order_id"] == "A-1001/[REDACTED:email]"
    assert (order["amount_cents"], order["state"], order["channel"]) == (
        10_000, "refunded", "facebook_paid",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Bad calls come back as errors for the model
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("no_such_tool", {}, "unknown tool 'no_such_tool'; the tools are: channel_performance"),
        ("top_orders", "{not json", "not valid JSON (Expecting property name"),
        ("top_orders", "[1, 2]", "must be a JSON object"),
        ("top_orders", "", "start: Field required"),
        ("top_orders", {"start": "2025-03-08", "end": "2025-03-01"}, "must start before it ends"),
        ("top_orders", {"start": "2024-01-01", "end": "2025-03-01"}, "at most 366"),
        ("top_orders", {**P, "channel": "DROP TABLE x"}, "channel: String should match"),
        ("top_orders", {**P, "tenant_id": str(uuid4())}, "tenant_id: Extra inputs"),
        ("top_orders", {**P, "limit": "many"}, "limit: Input should be a valid integer"),
        ("top_orders", {"start": "yesterday", "end": "2025-03-01"}, "start: Input should be"),
        ("compare_periods", {}, "current_start: Field required; current_end: Field required"),
    ],
)
async def test_bad_calls_are_errors_not_exceptions(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, name: str, arguments: Any, expected: str
) -> None:
    outcome = await run_tool(app_pool, tenant.tenant_id, name, arguments)
    assert outcome.error is not None and expected in outcome.error, outcome.error
    assert outcome.output is None and outcome.truncated is False
    if isinstance(arguments, str) and arguments.strip().startswith("{"):
        assert outcome.arguments == arguments  # unparseable: kept as text for the record


async def test_json_text_arguments_are_accepted(
    app_pool: asyncpg.Pool, pii_tenant: tuple[UUID, UUID]
) -> None:
    tenant_id, _ = pii_tenant
    outcome = await run_tool(app_pool, tenant_id, "top_orders", json.dumps({**P, "limit": 5}))
    assert outcome.error is None and outcome.arguments == {**P, "limit": 5}


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------


async def test_record_and_list_tool_calls(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, pii_tenant: tuple[UUID, UUID]
) -> None:
    tenant_id, other_id = pii_tenant
    ok = await run_tool(app_pool, tenant_id, "top_orders", P)
    bad = await run_tool(app_pool, tenant_id, "top_orders", "{oops")
    assert ok.error is None and bad.error is not None
    async with tenant_transaction(app_pool, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question) VALUES ($1, 'why?') RETURNING id",
            tenant_id,
        )
    token = await lease_run(owner_pool, tenant_id, run_id)  # a run's writes need its token
    with presenting_run_token(token):
        async with tenant_transaction(app_pool, tenant_id) as conn:
            first = await record_tool_call(conn, tenant_id, run_id, 1, ok)
            second = await record_tool_call(conn, tenant_id, run_id, 2, bad)
    async with tenant_transaction(app_pool, tenant_id, readonly=True) as conn:
        calls = await list_tool_calls(conn, run_id)
    assert [c["id"] for c in calls] == [first, second]
    assert [c["step"] for c in calls] == [1, 2]
    assert calls[0]["tool_name"] == "top_orders" and calls[0]["input_params"] == P
    assert calls[0]["output"] == ok.output and calls[0]["error"] is None
    assert calls[0]["output_truncated"] is False and calls[0]["duration_ms"] == ok.duration_ms
    assert calls[1]["input_params"] == {"raw": "{oops"} and calls[1]["output"] is None
    assert calls[1]["error"] == bad.error
    async with tenant_transaction(app_pool, other_id, readonly=True) as conn:
        assert await list_tool_calls(conn, run_id) == []


def test_outcome_is_frozen() -> None:
    outcome = ToolOutcome("top_orders", {}, None, False, "x", 1)
    with pytest.raises(AttributeError):
        outcome.error = None  # type: ignore[misc]
