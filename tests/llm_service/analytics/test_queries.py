"""The analytics queries on a small handcrafted data set: exact figures, isolation, fingerprints.

Data is written as the owner; every query runs as the application role in a READ ONLY tenant
transaction, so row-level security is what keeps the other tenant's rows out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID, uuid4

import asyncpg
import pytest

from llm_service.analytics.channel_queries import (
    ATTRIBUTION_MODEL_COMPARISON,
    CHANNEL_PERFORMANCE,
    attribution_model_comparison,
    channel_performance,
)
from llm_service.analytics.data_quality_queries import (
    CHANNEL_CORRECTIONS,
    DEAD_EVENT_SUMMARY,
    channel_corrections,
    dead_event_summary,
)
from llm_service.analytics.fingerprint_queries import data_fingerprint
from llm_service.analytics.ledger_queries import (
    RECONCILIATION_STATUS,
    REVENUE_STATE_CHANGES,
    TOP_ORDERS,
    reconciliation_status,
    revenue_state_changes,
    top_orders,
)
from llm_service.analytics.models import Period
from llm_service.analytics.ratios import change_percent, percent
from llm_service.analytics.trend_queries import PERIOD_COMPARISON, period_comparison
from llm_service.db.pool import tenant_transaction
from llm_service.errors import InvalidRequest
from llm_service.tenants.service import CreatedTenant

T = TypeVar("T")

START, END = date(2025, 3, 1), date(2025, 3, 8)  # the current period, [start, end)
PREV_START, PREV_END = date(2025, 2, 22), date(2025, 3, 1)


def at(day: int, hour: int = 12, minute: int = 0, *, month: int = 3) -> datetime:
    """A UTC instant in 2025."""
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Writing the data set (as the owner)
# --------------------------------------------------------------------------------------------


async def add_event(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    when: datetime,
    event_type: str,
    channel: str,
    revenue: int = 0,
) -> UUID:
    """Insert one attribution event."""
    event_id: UUID = await conn.fetchval(
        """
        INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type,
                                        channel, revenue_cents, idempotency_key)
        VALUES ($1, $2, $2, $3, $4, $5, $6) RETURNING id
        """,
        tenant_id,
        when,
        event_type,
        channel,
        revenue,
        uuid4().hex,
    )
    return event_id


async def allocate(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    event_id: UUID,
    model_type: str,
    split: dict[str, int],
    *,
    version: str = "1",
) -> dict[str, UUID]:
    """One model's split of an event's revenue, in one statement (the sum trigger checks it)."""
    total = sum(split.values())
    ratios = [
        (Decimal(c) / Decimal(total)).quantize(Decimal("0.00000001")) if total else Decimal(0)
        for c in split.values()
    ]
    rows = await conn.fetch(
        """
        INSERT INTO attribution_allocations (tenant_id, event_id, channel_code,
            allocated_revenue_cents, allocation_ratio, model_type, model_version)
        SELECT $1, $2, u.channel, u.cents, u.ratio, $3, $4
        FROM unnest($5::text[], $6::bigint[], $7::numeric[]) AS u(channel, cents, ratio)
        RETURNING id, channel_code
        """,
        tenant_id,
        event_id,
        model_type,
        version,
        list(split),
        list(split.values()),
        ratios,
    )
    return {r["channel_code"]: r["id"] for r in rows}


async def add_ledger(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    transaction_id: str,
    *,
    order_id: str | None,
    allocation_id: UUID | None,
    state: str,
    amount: int,
    revenue: int,
    posted_at: datetime,
    verified: bool = False,
) -> UUID:
    """Insert one ledger row."""
    ledger_id: UUID = await conn.fetchval(
        """
        INSERT INTO revenue_ledger (tenant_id, transaction_id, order_id, allocation_id, state,
                                    amount_cents, revenue_cents, is_verified, posted_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id
        """,
        tenant_id,
        transaction_id,
        order_id,
        allocation_id,
        state,
        amount,
        revenue,
        verified,
        posted_at,
    )
    return ledger_id


async def reverse(
    conn: asyncpg.Connection, ledger_id: UUID, state: str, reason: str, when: datetime
) -> None:
    """Move a ledger row to refunded/chargeback (the trigger audits it) at a given time."""
    await conn.execute(
        """
        UPDATE revenue_ledger
           SET state = $2,
               metadata = metadata || jsonb_build_object('state_change_reason', $3::text)
         WHERE id = $1
        """,
        ledger_id,
        state,
        reason,
    )
    await conn.execute(
        "UPDATE revenue_state_transitions SET transitioned_at = $3 "
        "WHERE ledger_id = $1 AND to_state = $2",
        ledger_id,
        state,
        when,
    )


async def add_dead_event(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    source: str,
    error_type: str,
    message: str,
    status: str,
    when: datetime,
) -> None:
    """Insert one dead event."""
    await conn.execute(
        """
        INSERT INTO dead_events (tenant_id, source, error_type, error_message,
                                 remediation_status, ingested_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $6)
        """,
        tenant_id,
        source,
        error_type,
        message,
        status,
        when,
    )


async def add_correction(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    entity_type: str,
    entity_id: UUID,
    from_channel: str,
    to_channel: str,
    by: str,
    when: datetime | None,
    reason: str | None,
) -> None:
    """Insert one channel correction (at `when`, or now)."""
    await conn.execute(
        """
        INSERT INTO channel_assignment_corrections (tenant_id, entity_type, entity_id,
            from_channel, to_channel, corrected_by, corrected_at, reason)
        VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, now()), $8)
        """,
        tenant_id,
        entity_type,
        entity_id,
        from_channel,
        to_channel,
        by,
        when,
        reason,
    )


async def add_run(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    state: str,
    created_at: datetime,
    last_run_at: datetime | None,
    error: str | None,
) -> None:
    """Insert one reconciliation run."""
    await conn.execute(
        """
        INSERT INTO reconciliation_runs (tenant_id, state, last_run_at, error_message, created_at)
        VALUES ($1, $2, $3, $4, $5)
        """,
        tenant_id,
        state,
        last_run_at,
        error,
        created_at,
    )


@dataclass(frozen=True)
class Dataset:
    """Ids the tests need of the handcrafted data set."""

    tenant_id: UUID
    other_tenant_id: UUID
    events: dict[str, UUID]
    ledger: dict[str, UUID]
    allocations: dict[str, dict[str, UUID]]


async def seed(conn: asyncpg.Connection, tenant_id: UUID) -> Dataset:
    """The handcrafted data set of one tenant (the figures the tests assert are derived here)."""
    ev: dict[str, UUID] = {}
    al: dict[str, dict[str, UUID]] = {}
    # Current period [2025-03-01, 2025-03-08).
    ev["e1"] = await add_event(conn, tenant_id, at(2, 10), "purchase", "facebook_paid", 10_000)
    ev["e2"] = await add_event(conn, tenant_id, at(3), "purchase", "email", 5_000)
    ev["e3"] = await add_event(conn, tenant_id, at(4), "click", "facebook_paid")
    ev["e4"] = await add_event(conn, tenant_id, at(5), "conversion", "email", 2_000)
    last_moment = datetime(2025, 3, 7, 23, 59, 59, 999_999, tzinfo=UTC)
    ev["e5"] = await add_event(conn, tenant_id, last_moment, "page_view", "organic_search")
    # The end boundary belongs to the next period.
    ev["e6"] = await add_event(conn, tenant_id, at(8, 0), "purchase", "organic_search", 3_000)
    # Previous period [2025-02-22, 2025-03-01).
    ev["e7"] = await add_event(conn, tenant_id, at(25, month=2), "purchase", "facebook_paid", 8_000)
    ev["e8"] = await add_event(conn, tenant_id, at(28, 23, month=2), "purchase", "email", 1_000)

    al["e1_last"] = await allocate(
        conn, tenant_id, ev["e1"], "last_touch", {"facebook_paid": 10_000}
    )
    al["e1_first"] = await allocate(
        conn, tenant_id, ev["e1"], "first_touch", {"email": 6_000, "facebook_paid": 4_000}
    )
    await allocate(conn, tenant_id, ev["e1"], "linear", {"facebook_paid": 5_000, "email": 5_000})
    # A newer linear version supersedes version 1 (summing both would double the revenue).
    await allocate(
        conn, tenant_id, ev["e1"], "linear", {"facebook_paid": 7_000, "email": 3_000}, version="2"
    )
    al["e2_last"] = await allocate(conn, tenant_id, ev["e2"], "last_touch", {"email": 5_000})
    await allocate(conn, tenant_id, ev["e2"], "first_touch", {"facebook_paid": 5_000})
    await allocate(conn, tenant_id, ev["e2"], "linear", {"email": 2_500, "facebook_paid": 2_500})
    for model in ("last_touch", "first_touch", "linear"):
        await allocate(conn, tenant_id, ev["e4"], model, {"email": 2_000})
    await allocate(conn, tenant_id, ev["e6"], "last_touch", {"organic_search": 3_000})
    al["e7_last"] = await allocate(
        conn, tenant_id, ev["e7"], "last_touch", {"facebook_paid": 8_000}
    )
    await allocate(conn, tenant_id, ev["e8"], "last_touch", {"email": 1_000})

    lg: dict[str, UUID] = {}
    lg["l1"] = await add_ledger(
        conn, tenant_id, "t1", order_id="o-1", allocation_id=al["e1_last"]["facebook_paid"],
        state="captured", amount=10_825, revenue=10_000, posted_at=at(2, 10, 1), verified=True,
    )  # fmt: skip
    lg["l2"] = await add_ledger(
        conn, tenant_id, "t2", order_id="o-2", allocation_id=al["e2_last"]["email"],
        state="captured", amount=5_413, revenue=5_000, posted_at=at(3, 12, 1),
    )  # fmt: skip
    lg["l3"] = await add_ledger(
        conn, tenant_id, "t3", order_id="o-3", allocation_id=None,
        state="captured", amount=3_000, revenue=3_000, posted_at=at(5),
    )  # fmt: skip
    lg["l4"] = await add_ledger(
        conn, tenant_id, "t4", order_id="o-4", allocation_id=al["e7_last"]["facebook_paid"],
        state="captured", amount=8_660, revenue=8_000, posted_at=at(25, month=2),
    )  # fmt: skip
    lg["l5"] = await add_ledger(
        conn, tenant_id, "t5", order_id="o-5", allocation_id=None,
        state="authorized", amount=1_000, revenue=1_000, posted_at=at(6),
    )  # fmt: skip
    await reverse(conn, lg["l2"], "refunded", "refund: damaged_item", at(4))
    await reverse(conn, lg["l1"], "chargeback", "chargeback: fraudulent", at(6))
    await reverse(conn, lg["l3"], "refunded", "refund: wrong_size", at(6, 15))
    await reverse(conn, lg["l4"], "refunded", "refund: damaged_item", at(2))  # posted earlier

    await add_dead_event(conn, tenant_id, "web_sdk", "schema_validation", "missing field",
                         "pending", at(2, 10))  # fmt: skip
    await add_dead_event(conn, tenant_id, "web_sdk", "schema_validation", "bad payload",
                         "pending", at(2, 11))  # fmt: skip
    await add_dead_event(conn, tenant_id, "shopify_webhook", "signature_mismatch", "hmac failed",
                         "resolved", at(3, 8))  # fmt: skip
    await add_dead_event(conn, tenant_id, "web_sdk", "schema_validation", "missing field 'price'",
                         "pending", at(3, 9))  # fmt: skip
    await add_dead_event(conn, tenant_id, "meta_capi", "rate_limited", "429", "pending", at(9))

    await add_correction(conn, tenant_id, "event", ev["e3"], "facebook_paid", "instagram_paid",
                         "alice", at(4), "utm mismatch")  # fmt: skip
    fb_alloc = al["e1_last"]["facebook_paid"]
    await add_correction(conn, tenant_id, "allocation", fb_alloc, "facebook_paid",
                         "instagram_paid", "alice", at(5), "follows event")  # fmt: skip
    await add_correction(conn, tenant_id, "event", ev["e5"], "organic_search", "referral",
                         "bot", at(6), None)  # fmt: skip
    await add_correction(conn, tenant_id, "event", ev["e1"], "facebook_paid", "instagram_paid",
                         "alice", at(10), "later")  # fmt: skip

    await add_run(conn, tenant_id, "completed", at(3, 2), at(3, 2), None)
    await add_run(conn, tenant_id, "failed", at(10, 2), at(10, 2), "stripe: HTTP 429")
    await add_run(conn, tenant_id, "completed", at(20, 2, month=2), at(20, 2, month=2), None)
    return Dataset(tenant_id, tenant_id, ev, lg, al)


async def seed_other(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    """Another tenant's rows in the same period, on a channel the first tenant never uses."""
    event = await add_event(conn, tenant_id, at(3), "purchase", "tiktok_paid", 99_900)
    alloc = await allocate(conn, tenant_id, event, "last_touch", {"tiktok_paid": 99_900})
    await allocate(conn, tenant_id, event, "first_touch", {"tiktok_paid": 99_900})
    ledger = await add_ledger(
        conn, tenant_id, "t-other", order_id="o-other", allocation_id=alloc["tiktok_paid"],
        state="captured", amount=99_999, revenue=99_900, posted_at=at(3, 13),
    )  # fmt: skip
    await reverse(conn, ledger, "refunded", "refund: other", at(4))
    await add_dead_event(conn, tenant_id, "other_src", "boom", "other", "pending", at(3))
    await add_correction(conn, tenant_id, "event", event, "tiktok_paid", "email", "mallory",
                         at(4), "other")  # fmt: skip
    await add_run(conn, tenant_id, "running", at(4), None, None)


@pytest.fixture
async def data(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> Dataset:
    """The data set for a fresh tenant, and another tenant's data beside it."""
    async with tenant_transaction(owner_pool, other_tenant.tenant_id) as conn:
        await seed_other(conn, other_tenant.tenant_id)
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        ds = await seed(conn, tenant.tenant_id)
    return Dataset(tenant.tenant_id, other_tenant.tenant_id, ds.events, ds.ledger, ds.allocations)


async def as_app(
    app_pool: asyncpg.Pool, tenant_id: UUID, query: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """Run a query as the application role in a READ ONLY tenant transaction."""
    async with tenant_transaction(app_pool, tenant_id, readonly=True) as conn:
        return await query(conn)


def d(text: str) -> Decimal:
    """Shorthand for an exact Decimal."""
    return Decimal(text)


# --------------------------------------------------------------------------------------------
# Ratios
# --------------------------------------------------------------------------------------------


def test_percent_is_exact_half_even() -> None:
    assert percent(10_000, 17_000) == d("58.82")
    assert percent(7_000, 17_000) == d("41.18")
    assert percent(1, 8) == d("12.50")
    assert percent(1, 80_000) == d("0.00")  # 0.00125 -> 0.00 (half-even)
    assert percent(3, 80_000) == d("0.00")  # 0.00375 rounds down at the third place
    assert percent(5, 2_000) == d("0.25")
    assert percent(1, 0) is None
    assert change_percent(7_000, 1_000) == d("600.00")
    assert change_percent(0, 0) is None
    assert change_percent(0, 5) == d("-100.00")


# --------------------------------------------------------------------------------------------
# Exact figures
# --------------------------------------------------------------------------------------------


async def test_channel_performance_last_touch(app_pool: asyncpg.Pool, data: Dataset) -> None:
    result = await as_app(app_pool, data.tenant_id, lambda c: channel_performance(c, START, END))
    assert result.period == Period(start=START, end=END)
    assert result.total_attributed_revenue_cents == 17_000
    got = [
        (r.channel, r.events, r.conversions, r.revenue_cents, r.attributed_revenue_cents,
         r.attributed_share_pct)
        for r in result.rows
    ]  # fmt: skip
    assert got == [
        ("facebook_paid", 2, 1, 10_000, 10_000, d("58.82")),
        ("email", 2, 2, 7_000, 7_000, d("41.18")),
        ("organic_search", 1, 0, 0, 0, d("0.00")),
    ]
    assert all(isinstance(r.revenue_cents, int) for r in result.rows)
    assert result.more_rows is False


async def test_channel_performance_models_versions_filter_and_limit(
    app_pool: asyncpg.Pool, data: Dataset
) -> None:
    first = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: channel_performance(c, START, END, model_type="first_touch"),
    )
    assert [(r.channel, r.attributed_revenue_cents) for r in first.rows] == [
        ("facebook_paid", 9_000),
        ("email", 8_000),
        ("organic_search", 0),
    ]
    # Linear counts only the latest version of e1's split (7000/3000, not 5000/5000 as well).
    linear = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: channel_performance(c, START, END, model_type="linear"),
    )
    assert linear.total_attributed_revenue_cents == 17_000
    assert [(r.channel, r.attributed_revenue_cents) for r in linear.rows][:2] == [
        ("facebook_paid", 9_500),
        ("email", 7_500),
    ]
    one = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: channel_performance(c, START, END, channel="email"),
    )
    assert [(r.channel, r.attributed_share_pct) for r in one.rows] == [("email", d("41.18"))]
    assert one.total_attributed_revenue_cents == 17_000  # the share is of every channel
    capped = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: channel_performance(c, START, END, limit=1),
    )
    assert [r.channel for r in capped.rows] == ["facebook_paid"]
    assert capped.more_rows is True
    none = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: channel_performance(c, START, END, channel="tiktok_paid"),
    )
    assert none.rows == () and none.total_attributed_revenue_cents == 17_000


async def test_period_comparison(app_pool: asyncpg.Pool, data: Dataset) -> None:
    result = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: period_comparison(c, (START, END), (PREV_START, PREV_END)),
    )
    t = result.totals
    assert t.channel is None
    assert (t.current_events, t.previous_events) == (5, 2)
    assert (t.current_conversions, t.previous_conversions, t.conversions_change) == (3, 2, 1)
    assert t.conversions_change_pct == d("50.00")
    assert (t.current_revenue_cents, t.previous_revenue_cents) == (17_000, 9_000)
    assert (t.revenue_change_cents, t.revenue_change_pct) == (8_000, d("88.89"))
    assert t.attributed_revenue_change_cents == 8_000
    got = [
        (r.channel, r.current_revenue_cents, r.previous_revenue_cents, r.revenue_change_cents,
         r.revenue_change_pct, r.current_attributed_revenue_cents,
         r.previous_attributed_revenue_cents, r.conversions_change_pct)
        for r in result.rows
    ]  # fmt: skip
    assert got == [
        ("email", 7_000, 1_000, 6_000, d("600.00"), 7_000, 1_000, d("100.00")),
        ("facebook_paid", 10_000, 8_000, 2_000, d("25.00"), 10_000, 8_000, d("0.00")),
        ("organic_search", 0, 0, 0, None, 0, 0, None),
    ]
    capped = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: period_comparison(
            c, (START, END), (PREV_START, PREV_END), channel="facebook_paid", limit=1
        ),
    )
    assert [r.channel for r in capped.rows] == ["facebook_paid"]
    assert capped.more_rows is False
    assert capped.totals.current_revenue_cents == 17_000
    # Overlapping periods: each event counts once in each period it falls in.
    same = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: period_comparison(c, (START, END), (date(2025, 2, 25), END)),
    )
    assert same.totals.current_revenue_cents == 17_000
    assert same.totals.previous_revenue_cents == 26_000  # + e7 (02-25) and e8 (02-28)
    assert same.totals.previous_attributed_revenue_cents == 26_000


async def test_revenue_state_changes(app_pool: asyncpg.Pool, data: Dataset) -> None:
    result = await as_app(app_pool, data.tenant_id, lambda c: revenue_state_changes(c, START, END))
    assert [(s.to_state, s.changes, s.amount_cents, s.revenue_cents) for s in result.by_state] == [
        ("refunded", 3, 17_073, 16_000),
        ("chargeback", 1, 10_825, 10_000),
    ]
    assert [(s.day, s.to_state, s.changes, s.amount_cents) for s in result.by_day] == [
        (date(2025, 3, 2), "refunded", 1, 8_660),
        (date(2025, 3, 4), "refunded", 1, 5_413),
        (date(2025, 3, 6), "chargeback", 1, 10_825),
        (date(2025, 3, 6), "refunded", 1, 3_000),
    ]
    assert [(s.channel, s.to_state, s.amount_cents) for s in result.by_channel] == [
        ("facebook_paid", "chargeback", 10_825),
        ("facebook_paid", "refunded", 8_660),
        ("email", "refunded", 5_413),
        (None, "refunded", 3_000),
    ]
    assert [(s.reason, s.to_state, s.changes, s.amount_cents) for s in result.top_reasons] == [
        ("refund: damaged_item", "refunded", 2, 14_073),
        ("chargeback: fraudulent", "chargeback", 1, 10_825),
        ("refund: wrong_size", "refunded", 1, 3_000),
    ]
    assert result.more_rows is False
    fb = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: revenue_state_changes(c, START, END, channel="facebook_paid", limit=1),
    )
    assert [(s.to_state, s.amount_cents) for s in fb.by_state] == [("chargeback", 10_825)]
    assert len(fb.by_day) == 1 and fb.more_rows is True


async def test_dead_event_summary(app_pool: asyncpg.Pool, data: Dataset) -> None:
    result = await as_app(app_pool, data.tenant_id, lambda c: dead_event_summary(c, START, END))
    assert result.total_events == 4
    got = [
        (g.source, g.error_type, g.remediation_status, g.events, g.first_seen, g.last_seen,
         g.latest_error_message)
        for g in result.groups
    ]  # fmt: skip
    assert got == [
        ("web_sdk", "schema_validation", "pending", 3, at(2, 10), at(3, 9),
         "missing field 'price'"),
        ("shopify_webhook", "signature_mismatch", "resolved", 1, at(3, 8), at(3, 8),
         "hmac failed"),
    ]  # fmt: skip
    assert [(p.day, p.events, p.top_source) for p in result.peak_days] == [
        (date(2025, 3, 2), 2, "web_sdk"),
        (date(2025, 3, 3), 2, "shopify_webhook"),  # a tie: the first source in order
    ]
    capped = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: dead_event_summary(c, START, END, limit=1),
    )
    assert len(capped.groups) == 1 and len(capped.peak_days) == 1
    assert capped.more_rows is True and capped.total_events == 4


async def test_channel_corrections(app_pool: asyncpg.Pool, data: Dataset) -> None:
    result = await as_app(app_pool, data.tenant_id, lambda c: channel_corrections(c, START, END))
    # Made in the period, or correcting the period's events whenever made: e1's fix of
    # 10 March (after the period) concerns an event of 2 March, so it is found too.
    assert result.total_corrections == 4
    pairs = [
        (p.from_channel, p.to_channel, p.corrections, p.event_corrections,
         p.allocation_corrections, p.first_corrected_at, p.last_corrected_at, p.corrected_by,
         p.latest_reasons, p.about_period_events)
        for p in result.pairs
    ]  # fmt: skip
    assert pairs == [
        ("facebook_paid", "instagram_paid", 3, 2, 1, at(4), at(10), ("alice",),
         ("later", "follows event", "utm mismatch"), 3),
        ("organic_search", "referral", 1, 1, 0, at(6), at(6), ("bot",), (), 1),
    ]  # fmt: skip
    assert [(a.corrected_by, a.corrections) for a in result.by_corrector] == [
        ("alice", 3),
        ("bot", 1),
    ]
    # A later window holds the 10 March fix by its date only (its event is not in it).
    later = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: channel_corrections(c, date(2025, 3, 10), date(2025, 3, 11)),
    )
    assert [(p.corrections, p.about_period_events) for p in later.pairs] == [(1, 0)]


async def test_attribution_model_comparison(app_pool: asyncpg.Pool, data: Dataset) -> None:
    result = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: attribution_model_comparison(c, START, END),
    )
    assert result.model_types == ("first_touch", "last_touch", "linear")
    got = [
        (r.channel, r.attributed_by_model, r.highest_model, r.lowest_model, r.spread_cents,
         r.spread_pct)
        for r in result.rows
    ]  # fmt: skip
    assert got == [
        ("email", {"first_touch": 8_000, "last_touch": 7_000, "linear": 7_500},
         "first_touch", "last_touch", 1_000, d("12.50")),
        ("facebook_paid", {"first_touch": 9_000, "last_touch": 10_000, "linear": 9_500},
         "last_touch", "first_touch", 1_000, d("10.00")),
    ]  # fmt: skip
    one = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: attribution_model_comparison(c, START, END, limit=1),
    )
    assert [r.channel for r in one.rows] == ["email"] and one.more_rows is True


async def test_top_orders(app_pool: asyncpg.Pool, data: Dataset) -> None:
    result = await as_app(app_pool, data.tenant_id, lambda c: top_orders(c, START, END))
    got = [
        (o.transaction_id, o.order_id, o.state, o.previous_state, o.amount_cents, o.revenue_cents,
         o.channel, o.attribution_model, o.is_verified)
        for o in result.orders
    ]  # fmt: skip
    assert got == [
        ("t1", "o-1", "chargeback", "captured", 10_825, 10_000, "facebook_paid", "last_touch",
         True),
        ("t2", "o-2", "refunded", "captured", 5_413, 5_000, "email", "last_touch", False),
        ("t3", "o-3", "refunded", "captured", 3_000, 3_000, None, None, False),
        ("t5", "o-5", "authorized", None, 1_000, 1_000, None, None, False),
    ]  # fmt: skip
    assert result.orders[0].posted_at == at(2, 10, 1)
    assert "metadata" not in result.orders[0].model_dump()
    capped = await as_app(app_pool, data.tenant_id, lambda c: top_orders(c, START, END, limit=2))
    assert [o.transaction_id for o in capped.orders] == ["t1", "t2"] and capped.more_rows
    email = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: top_orders(c, START, END, channel="email"),
    )
    assert [o.transaction_id for o in email.orders] == ["t2"]


async def test_reconciliation_status(app_pool: asyncpg.Pool, data: Dataset) -> None:
    result = await as_app(app_pool, data.tenant_id, lambda c: reconciliation_status(c, START, END))
    assert (result.event_purchases, result.event_purchase_revenue_cents) == (2, 15_000)
    assert (result.ledger_rows, result.ledger_revenue_cents) == (4, 19_000)
    assert result.unverified_ledger_rows == 3
    assert result.event_minus_ledger_revenue_cents == -4_000
    states = [
        (s.state, s.rows, s.amount_cents, s.revenue_cents, s.unverified_rows)
        for s in result.ledger_by_state
    ]
    assert states == [
        ("authorized", 1, 1_000, 1_000, 1),
        ("chargeback", 1, 10_825, 10_000, 0),
        ("refunded", 2, 8_413, 8_000, 2),
    ]
    # Runs created in the period or within a week after it, newest first.
    assert [(r.state, r.created_at, r.error_message) for r in result.runs] == [
        ("failed", at(10, 2), "stripe: HTTP 429"),
        ("completed", at(3, 2), None),
    ]
    one = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: reconciliation_status(c, START, END, limit=1),
    )
    assert len(one.runs) == 1 and one.more_rows is True


async def test_empty_tenant_and_period(app_pool: asyncpg.Pool, data: Dataset) -> None:
    empty_start, empty_end = date(2024, 1, 1), date(2024, 1, 8)

    async def everything(conn: asyncpg.Connection) -> list[Any]:
        return [
            await channel_performance(conn, empty_start, empty_end),
            await period_comparison(conn, (empty_start, empty_end), (START, END)),
            await revenue_state_changes(conn, empty_start, empty_end),
            await dead_event_summary(conn, empty_start, empty_end),
            await channel_corrections(conn, empty_start, empty_end),
            await attribution_model_comparison(conn, empty_start, empty_end),
            await top_orders(conn, empty_start, empty_end),
            await reconciliation_status(conn, empty_start, empty_end),
        ]

    perf, comparison, changes, dead, corrections, models, orders, recon = await as_app(
        app_pool, data.tenant_id, everything
    )
    assert perf.rows == () and perf.total_attributed_revenue_cents == 0
    assert comparison.totals.current_revenue_cents == 0
    assert comparison.totals.previous_revenue_cents == 17_000
    assert comparison.totals.revenue_change_pct == d("-100.00")
    assert changes.by_state == () and dead.total_events == 0 and dead.groups == ()
    assert corrections.total_corrections == 0 and models.rows == () and orders.orders == ()
    assert recon.event_purchases == 0 and recon.ledger_by_state == () and recon.runs == ()


async def test_invalid_arguments_raise_invalid_request(
    app_pool: asyncpg.Pool, data: Dataset
) -> None:
    async def bad(conn: asyncpg.Connection) -> None:
        with pytest.raises(InvalidRequest, match="start before"):
            await channel_performance(conn, END, START)
        with pytest.raises(InvalidRequest, match="start before"):
            await top_orders(conn, START, START)
        with pytest.raises(InvalidRequest, match="limit"):
            await top_orders(conn, START, END, limit=0)
        with pytest.raises(InvalidRequest, match="model"):
            await channel_performance(conn, START, END, model_type="magic")

    await as_app(app_pool, data.tenant_id, bad)


# --------------------------------------------------------------------------------------------
# Isolation
# --------------------------------------------------------------------------------------------


async def test_other_tenant_data_never_appears(app_pool: asyncpg.Pool, data: Dataset) -> None:
    async def views(conn: asyncpg.Connection) -> str:
        parts = [
            await channel_performance(conn, START, END, model_type="first_touch"),
            await period_comparison(conn, (START, END), (PREV_START, PREV_END)),
            await revenue_state_changes(conn, START, END),
            await dead_event_summary(conn, START, END),
            await channel_corrections(conn, START, END),
            await attribution_model_comparison(conn, START, END),
            await top_orders(conn, START, END),
            await reconciliation_status(conn, START, END),
        ]
        return " ".join(p.model_dump_json() for p in parts)

    text = await as_app(app_pool, data.tenant_id, views)
    for marker in ("tiktok_paid", "99900", "99999", "t-other", "o-other", "other_src",
                   "mallory", "refund: other", "running"):  # fmt: skip
        assert marker not in text

    # Naming the other tenant's channel finds nothing either.
    async def by_channel(conn: asyncpg.Connection) -> list[int]:
        perf = await channel_performance(conn, START, END, channel="tiktok_paid")
        orders = await top_orders(conn, START, END, channel="tiktok_paid")
        changes = await revenue_state_changes(conn, START, END, channel="tiktok_paid")
        models = await attribution_model_comparison(conn, START, END, channel="tiktok_paid")
        return [len(perf.rows), len(orders.orders), len(changes.by_state), len(models.rows)]

    assert await as_app(app_pool, data.tenant_id, by_channel) == [0, 0, 0, 0]

    # The other tenant sees only its own rows.
    other = await as_app(app_pool, data.other_tenant_id, lambda c: top_orders(c, START, END))
    assert [o.transaction_id for o in other.orders] == ["t-other"]


async def test_no_tenant_set_sees_nothing(app_pool: asyncpg.Pool, data: Dataset) -> None:
    async with app_pool.acquire() as conn, conn.transaction(readonly=True):
        result = await top_orders(conn, START, END)
        perf = await channel_performance(conn, START, END)
    assert result.orders == () and perf.rows == ()


# --------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------


async def fingerprint(
    app_pool: asyncpg.Pool, tenant_id: UUID, subject: str, channel: str | None = None
) -> str:
    """The fingerprint of the current period, as the application role."""
    return await as_app(
        app_pool,
        tenant_id,
        lambda c: data_fingerprint(c, subject, START, END, channel=channel),
    )


async def as_owner(
    owner_pool: asyncpg.Pool, tenant_id: UUID, write: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> None:
    """Write something as the owner for a tenant."""
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        await write(conn)


async def test_fingerprint_is_stable_and_scoped(app_pool: asyncpg.Pool, data: Dataset) -> None:
    base = await fingerprint(app_pool, data.tenant_id, "channel_performance")
    assert len(base) == 64 and int(base, 16) >= 0
    assert await fingerprint(app_pool, data.tenant_id, "channel_performance") == base
    # Subject, channel and period are part of it; so is the tenant's data.
    assert await fingerprint(app_pool, data.tenant_id, "top_orders") != base
    assert await fingerprint(app_pool, data.tenant_id, "channel_performance", "email") != base
    assert await fingerprint(app_pool, data.other_tenant_id, "channel_performance") != base
    other_period = await as_app(
        app_pool,
        data.tenant_id,
        lambda c: data_fingerprint(c, "channel_performance", PREV_START, PREV_END),
    )
    assert other_period != base


async def test_fingerprint_changes_with_events_and_allocations(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Dataset
) -> None:
    tid, subject = data.tenant_id, "channel_performance"
    before = await fingerprint(app_pool, tid, subject)
    email_before = await fingerprint(app_pool, tid, subject, "email")

    # Outside the period, or another tenant's: no change.
    await as_owner(owner_pool, tid, lambda c: add_event(c, tid, at(8, 0), "click", "email"))
    await as_owner(
        owner_pool, tid, lambda c: add_event(c, tid, at(28, 23, month=2), "click", "email")
    )
    other = data.other_tenant_id
    await as_owner(owner_pool, other, lambda c: add_event(c, other, at(3), "click", "email"))
    assert await fingerprint(app_pool, tid, subject) == before

    # An event in the period: changed (a zero-revenue click too).
    await as_owner(owner_pool, tid, lambda c: add_event(c, tid, at(7, 23), "click", "direct"))
    after_event = await fingerprint(app_pool, tid, subject)
    assert after_event != before
    # ... but not the fingerprint scoped to another channel.
    assert await fingerprint(app_pool, tid, subject, "email") == email_before

    # An allocation added for an event in the period (a new model).
    e2 = data.events["e2"]
    await as_owner(owner_pool, tid, lambda c: allocate(c, tid, e2, "time_decay", {"email": 5_000}))
    after_allocation = await fingerprint(app_pool, tid, subject)
    assert after_allocation != after_event

    # An allocation changed (moved to another channel; the sum still holds).
    alloc = data.allocations["e2_last"]["email"]
    await as_owner(
        owner_pool,
        tid,
        lambda c: c.execute(
            "UPDATE attribution_allocations SET channel_code = 'referral' WHERE id = $1", alloc
        ),
    )
    assert await fingerprint(app_pool, tid, subject) != after_allocation


async def test_fingerprint_changes_with_ledger_state(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Dataset
) -> None:
    tid = data.tenant_id
    orders_before = await fingerprint(app_pool, tid, "top_orders")
    recon_before = await fingerprint(app_pool, tid, "reconciliation_status")
    # A ledger row posted outside the period changes state: no change for these subjects.
    l4 = data.ledger["l4"]
    await as_owner(
        owner_pool,
        tid,
        lambda c: c.execute("UPDATE revenue_ledger SET state = 'chargeback' WHERE id = $1", l4),
    )
    assert await fingerprint(app_pool, tid, "top_orders") == orders_before
    # The authorised order in the period is captured.
    l5 = data.ledger["l5"]
    await as_owner(
        owner_pool,
        tid,
        lambda c: c.execute("UPDATE revenue_ledger SET state = 'captured' WHERE id = $1", l5),
    )
    assert await fingerprint(app_pool, tid, "top_orders") != orders_before
    assert await fingerprint(app_pool, tid, "reconciliation_status") != recon_before


async def test_fingerprint_changes_with_state_transitions(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Dataset
) -> None:
    tid, subject = data.tenant_id, "revenue_state_changes"
    before = await fingerprint(app_pool, tid, subject)
    l5 = data.ledger["l5"]
    await as_owner(owner_pool, tid, lambda c: reverse(c, l5, "refunded", "late", at(9)))
    assert await fingerprint(app_pool, tid, subject) == before  # transitioned after the period
    ledger = data.ledger["l3"]  # refunded on 03-06: now charged back as well
    await as_owner(owner_pool, tid, lambda c: reverse(c, ledger, "chargeback", "cb", at(7)))
    assert await fingerprint(app_pool, tid, subject) != before


async def test_fingerprint_changes_with_corrections(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Dataset
) -> None:
    tid = data.tenant_id
    subjects = ("channel_corrections", "channel_performance", "some_new_subject")
    before = [await fingerprint(app_pool, tid, s) for s in subjects]
    dead_before = await fingerprint(app_pool, tid, "dead_event_summary")
    # Made now about an event of another period: no change.
    e7 = data.events["e7"]
    await as_owner(
        owner_pool,
        tid,
        lambda c: add_correction(c, tid, "event", e7, "facebook_paid", "email", "x", None, "r"),
    )
    assert [await fingerprint(app_pool, tid, s) for s in subjects] == before
    # Made now (after the period) about an allocation of an event in the period: changed.
    alloc = data.allocations["e1_first"]["email"]
    await as_owner(
        owner_pool,
        tid,
        lambda c: add_correction(
            c, tid, "allocation", alloc, "email", "sms", "x", None, "reassigned"
        ),
    )
    after = [await fingerprint(app_pool, tid, s) for s in subjects]
    assert all(a != b for a, b in zip(after, before, strict=True))
    assert await fingerprint(app_pool, tid, "dead_event_summary") == dead_before


async def test_fingerprint_changes_with_dead_events(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Dataset
) -> None:
    tid, subject = data.tenant_id, "dead_event_summary"
    before = await fingerprint(app_pool, tid, subject)
    await as_owner(
        owner_pool, tid, lambda c: add_dead_event(c, tid, "s", "e", "m", "pending", at(8, 0))
    )
    other = data.other_tenant_id
    await as_owner(
        owner_pool, other, lambda c: add_dead_event(c, other, "s", "e", "m", "pending", at(3))
    )
    assert await fingerprint(app_pool, tid, subject) == before
    await as_owner(
        owner_pool, tid, lambda c: add_dead_event(c, tid, "s", "e", "m", "pending", at(7))
    )
    assert await fingerprint(app_pool, tid, subject) != before


def test_every_query_has_a_row_cap() -> None:
    for name, sql in (
        ("CHANNEL_PERFORMANCE", CHANNEL_PERFORMANCE),
        ("PERIOD_COMPARISON", PERIOD_COMPARISON),
        ("REVENUE_STATE_CHANGES", REVENUE_STATE_CHANGES),
        ("DEAD_EVENT_SUMMARY", DEAD_EVENT_SUMMARY),
        ("CHANNEL_CORRECTIONS", CHANNEL_CORRECTIONS),
        ("ATTRIBUTION_MODEL_COMPARISON", ATTRIBUTION_MODEL_COMPARISON),
        ("TOP_ORDERS", TOP_ORDERS),
        ("RECONCILIATION_STATUS", RECONCILIATION_STATUS),
    ):
        assert sql.rstrip().splitlines()[-1].startswith("LIMIT $"), name
        assert "metadata" not in sql and "raw_payload" not in sql, name
