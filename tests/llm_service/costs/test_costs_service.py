"""The monthly cost report: month rules, exact amounts, and agreement with the calls."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg
import pytest

from budgets.estimate import actual_cost
from llm_service.costs.ledger_repository import reserve_call
from llm_service.costs.service import (
    cents_text,
    fraction_text,
    monthly_report,
    parse_month,
    usd_text,
)
from llm_service.db.pool import tenant_transaction
from llm_service.errors import InvalidRequest
from llm_service.tenants.service import CreatedTenant
from tests.helpers.cost_workload import GPT_4O_MINI, MODELS, MONTH, Call, random_workload, run_call


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2025-01", date(2025, 1, 1)), ("2024-12", date(2024, 12, 1)), ("1970-01", date(1970, 1, 1)),
     ("2099-12", date(2099, 12, 1))],
)  # fmt: skip
def test_parse_month(text: str, expected: date) -> None:
    assert parse_month(text) == expected


@pytest.mark.parametrize("text", ["0001-01", "1960-01", "1969-12", "2100-01", "2200-01", "9999-12"])
def test_a_month_outside_1970_to_2100_is_refused_as_every_period_is(text: str) -> None:
    """The README's rule for every period (a new user's 1960-01 answered 200)."""
    with pytest.raises(InvalidRequest, match="outside 1970-01 to 2099-12") as refused:
        parse_month(text)
    assert refused.value.status == 422


@pytest.mark.parametrize(
    "text",
    [
        *("2025-13", "2025-00", "25-01", "", "2025-1", "2025-01-01", "0000-01", "abcd-ef"),
        *(" 2025-01", "2025-01\n", "２０２５-01", "2025/01"),
    ],
)
def test_parse_month_refuses_malformed(text: str) -> None:
    with pytest.raises(InvalidRequest, match="YYYY-MM") as refused:
        parse_month(text)
    assert refused.value.status == 422


def test_parse_month_defaults_to_current_utc_month() -> None:
    assert parse_month(None, today=date(2026, 3, 31)) == date(2026, 3, 1)
    assert parse_month(None) == datetime.now(UTC).date().replace(day=1)


def test_amount_texts_are_exact() -> None:
    assert cents_text(Decimal("0.000015")) == "0.0000150000"
    assert usd_text(Decimal("0.0000150000")) == "0.00000015"
    assert usd_text(Decimal("2000.0000000000")) == "20"
    assert usd_text(Decimal("0E-10")) == "0"
    assert cents_text(Decimal(0)) == "0.0000000000"
    assert usd_text(Decimal("9999999999.9999999999")) == "99999999.999999999999"
    assert fraction_text(Decimal("2.5"), Decimal("10")) == "0.25"
    assert fraction_text(Decimal("0.000015"), Decimal("2000")) == "0.0000000075"
    assert fraction_text(Decimal(1), Decimal(3)) == "0.33333333333333333333"
    assert fraction_text(Decimal(0), Decimal(0)) is None


async def test_report_equals_sum_of_calls(app_pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    seed = random.randrange(2**32)
    print(f"workload seed {seed}")
    calls = await random_workload(app_pool, tenant.tenant_id, random.Random(seed))
    report = await monthly_report(app_pool, tenant.tenant_id, MONTH)

    total = sum((c.cost_cents for c in calls), Decimal(0))
    assert report.month == f"{MONTH:%Y-%m}"
    assert report.tenant_id == tenant.tenant_id
    assert report.total_cost_cents == cents_text(total)
    assert Decimal(report.total_cost_usd) == total / 100
    assert Decimal(report.estimated_cost_cents) == sum(c.cost_cents for c in calls if c.estimate)
    assert report.calls == len(calls)
    assert report.input_tokens == sum(c.input_tokens for c in calls)
    assert report.output_tokens == sum(c.output_tokens for c in calls)

    for lines, attr in ((report.by_model, "model"), (report.by_endpoint, "endpoint")):
        expected: dict[str, list[Call]] = defaultdict(list)
        for call in calls:
            expected[getattr(call, attr)].append(call)
        assert {getattr(line, attr) for line in lines} == set(expected)
        for line in lines:
            group = expected[getattr(line, attr)]
            assert line.calls == len(group)
            assert Decimal(line.cost_cents) == sum(c.cost_cents for c in group)
            assert Decimal(line.cost_usd) * 100 == Decimal(line.cost_cents)
            assert line.input_tokens == sum(c.input_tokens for c in group)
            assert line.output_tokens == sum(c.output_tokens for c in group)

    # The daily rows come from the calls themselves and add up to the same totals.
    assert sum(Decimal(d.cost_cents) for d in report.daily) == total
    assert sum(d.calls for d in report.daily) == len(calls)
    assert {d.model for d in report.daily} == {c.model for c in calls}
    assert all(d.day.replace(day=1) == MONTH for d in report.daily)
    assert Decimal(report.cap_used_fraction or "x") == total / Decimal(2000)
    assert report.reserved_usd == "0"


async def test_one_token_call_is_exact_and_not_zero(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    cost = actual_cost(GPT_4O_MINI, 1, 0)
    assert cost == Decimal("0.00000015")
    await run_call(app_pool, tenant.tenant_id, MODELS[0], "explanations", cost, input_tokens=1)
    report = await monthly_report(app_pool, tenant.tenant_id, MONTH)
    assert report.total_cost_usd == "0.00000015"
    assert report.total_cost_cents == "0.0000150000"
    assert report.by_model[0].cost_usd == "0.00000015"
    assert report.daily[0].cost_cents == "0.0000150000"


async def test_month_without_calls_is_zeros(app_pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    await run_call(app_pool, tenant.tenant_id, MODELS[1], "investigations", Decimal("0.01"))
    report = await monthly_report(app_pool, tenant.tenant_id, date(2001, 1, 1))
    assert report.month == "2001-01"
    assert (report.total_cost_usd, report.total_cost_cents) == ("0", "0.0000000000")
    assert (report.calls, report.input_tokens, report.output_tokens) == (0, 0, 0)
    assert report.by_model == [] and report.by_endpoint == [] and report.daily == []
    assert (report.cap_usd, report.cap_cents) == ("20", "2000.0000000000")
    assert report.cap_used_fraction == "0"
    assert report.reserved_usd == "0"


async def test_reserved_and_cap_fraction(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    async with tenant_transaction(owner_pool, tid) as conn:
        await conn.execute("UPDATE tenants SET monthly_cap_cents = 10 WHERE id = $1", tid)
    await run_call(app_pool, tid, MODELS[0], "explanations", Decimal("0.025"), estimate=True)
    async with tenant_transaction(app_pool, tid) as conn:
        await reserve_call(
            conn,
            tenant_id=tid,
            endpoint="investigations",
            model=MODELS[1],
            provider="openai",
            worst_case_usd=Decimal("0.0123456789"),
            lease_seconds=60,
        )
    report = await monthly_report(app_pool, tid, MONTH)
    assert (report.total_cost_usd, report.estimated_cost_usd) == ("0.025", "0.025")
    assert report.cap_used_fraction == "0.25"
    assert (report.reserved_usd, report.reserved_cents) == ("0.0123456789", "1.2345678900")
    assert report.calls == 1  # a pending call is reserved, not yet spent


async def test_report_shows_only_the_tenant_itself(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    await run_call(app_pool, tenant.tenant_id, MODELS[2], "embeddings", Decimal("0.5"))
    report = await monthly_report(app_pool, other_tenant.tenant_id, MONTH)
    assert report.calls == 0
    assert report.by_model == [] and report.daily == []
