"""The demo-data generator: consistent rows in every table, the planted anomalies, determinism.

One data set is generated per module (as the owner) and inspected by SQL; a few tests generate
more, for a second tenant with the same seed and for the application role under RLS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import date, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import numpy as np
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.demo_data import (
    DemoDataExists,
    DemoDataSummary,
    InjectedAnomaly,
    _apportion,
    _model_weights,
    _split_cents,
    generate_demo_data,
)
from llm_service.errors import InvalidRequest
from llm_service.tenants.service import CreatedTenant, create_tenant

TODAY = date(2026, 3, 4)  # a Wednesday: the last full week is Monday 2026-02-23 .. Sunday 03-01
EVENTS = 20_000
SEED = 7
_GENERATED: list[UUID] = []  # tenants given demo data here, deleted when the module ends


@pytest.fixture(scope="module", autouse=True)
async def _drop_demo_tenants(owner_pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Delete this module's tenants (their rows go by cascade) so later tests scan less."""
    yield
    for tenant_id in _GENERATED:
        async with tenant_transaction(owner_pool, tenant_id) as conn:
            await conn.execute("DELETE FROM tenants WHERE id = $1", tenant_id)
    _GENERATED.clear()


async def _generate(
    pool: asyncpg.Pool, tenant_id: UUID, *, events: int = EVENTS, seed: int = SEED
) -> DemoDataSummary:
    _GENERATED.append(tenant_id)
    async with tenant_transaction(pool, tenant_id) as conn:
        return await generate_demo_data(conn, tenant_id, events=events, seed=seed, today=TODAY)


async def _rows(pool: asyncpg.Pool, tenant_id: UUID, query: str, *args: Any) -> list[Any]:
    """Run a read in the tenant's transaction; queries filter on tenant_id = $1 themselves."""
    async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
        return list(await conn.fetch(query, tenant_id, *args))


async def _value(pool: asyncpg.Pool, tenant_id: UUID, query: str, *args: Any) -> Any:
    rows = await _rows(pool, tenant_id, query, *args)
    return rows[0][0]


def _anomaly(summary: DemoDataSummary, kind: str) -> InjectedAnomaly:
    return next(a for a in summary.anomalies if a.kind == kind)


@pytest.fixture(scope="module")
async def generated(owner_pool: asyncpg.Pool) -> tuple[UUID, DemoDataSummary]:
    """One tenant with the default demo data set, generated once for the module."""
    created = await create_tenant(owner_pool, f"demo-{uuid4().hex[:8]}")
    summary = await _generate(owner_pool, created.tenant_id)
    # Fresh statistics, as after any bulk load: with the ones autovacuum had (or not) before the
    # load, PostgreSQL 15 may nest-loop the ledger/order join below past the statement timeout.
    async with owner_pool.acquire() as conn:
        await conn.execute("ANALYZE attribution_events, revenue_ledger, attribution_allocations")
    return created.tenant_id, summary


# --------------------------------------------------------------------------------------------
# Counts and internal consistency
# --------------------------------------------------------------------------------------------

COUNT_QUERIES = {
    table: f"SELECT count(*) FROM {table} WHERE tenant_id = $1"
    for table in (
        "attribution_events",
        "attribution_allocations",
        "revenue_ledger",
        "revenue_state_transitions",
        "dead_events",
        "reconciliation_runs",
        "channel_assignment_corrections",
    )
}


async def _table_counts(pool: asyncpg.Pool, tenant_id: UUID) -> dict[str, int]:
    return {table: await _value(pool, tenant_id, q) for table, q in COUNT_QUERIES.items()}


async def test_counts_match_the_summary(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = generated
    assert await _table_counts(owner_pool, tenant_id) == summary.table_counts()
    assert summary.attribution_events == EVENTS
    totals = await _rows(
        owner_pool,
        tenant_id,
        """
        SELECT count(*) FILTER (WHERE revenue_cents > 0),
               sum(revenue_cents),
               (SELECT sum(revenue_cents) FROM revenue_ledger WHERE tenant_id = $1),
               (SELECT count(*) FROM revenue_ledger WHERE tenant_id = $1 AND state = 'refunded'),
               (SELECT count(*) FROM revenue_ledger WHERE tenant_id = $1 AND state = 'chargeback')
        FROM attribution_events WHERE tenant_id = $1
        """,
    )
    assert tuple(totals[0]) == (
        summary.revenue_events,
        summary.event_revenue_cents,
        summary.ledger_revenue_cents,
        summary.refunds,
        summary.chargebacks,
    )
    assert summary.start_date == TODAY - timedelta(days=90)
    assert summary.end_date == TODAY - timedelta(days=1)
    assert "facebook_paid" in summary.channels and len(summary.channels) >= 10


async def test_events_follow_the_schema_rules(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = generated
    row = (
        await _rows(
            owner_pool,
            tenant_id,
            """
            SELECT count(*) FILTER (WHERE revenue_cents > 0
                                    AND event_type NOT IN ('purchase', 'conversion')),
                   count(*) FILTER (WHERE event_type IN ('purchase', 'conversion')
                                    AND revenue_cents = 0),
                   count(*) FILTER (WHERE currency <> 'USD'),
                   count(DISTINCT event_type),
                   count(DISTINCT channel),
                   count(*) FILTER (WHERE processing_status = 'processed')::float8 / count(*),
                   min(occurred_at)::date, max(occurred_at)::date,
                   count(*) FILTER (WHERE session_id IS NULL OR correlation_id IS NULL)
            FROM attribution_events WHERE tenant_id = $1
            """,
        )
    )[0]
    assert row[0] == 0 and row[1] == 0 and row[2] == 0
    assert row[3] == 6
    assert row[4] == len(summary.channels)
    assert row[5] > 0.97
    assert (row[6], row[7]) == (summary.start_date, summary.end_date)
    assert row[8] == 0


async def test_allocations_sum_exactly_to_event_revenue_per_model(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, _ = generated
    row = (
        await _rows(
            owner_pool,
            tenant_id,
            """
            WITH per_model AS (
                SELECT a.event_id, a.model_type, a.model_version,
                       sum(a.allocated_revenue_cents) AS allocated, count(*) AS channels,
                       max(e.revenue_cents) AS revenue
                FROM attribution_allocations a
                JOIN attribution_events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id
                WHERE a.tenant_id = $1
                GROUP BY a.event_id, a.model_type, a.model_version
            ), per_event AS (
                SELECT event_id, count(DISTINCT model_type) AS models FROM per_model GROUP BY 1
            )
            SELECT (SELECT count(*) FROM per_model WHERE allocated <> revenue),
                   (SELECT count(*) FROM per_model WHERE channels NOT BETWEEN 1 AND 4),
                   (SELECT min(models) FROM per_event), (SELECT max(models) FROM per_event),
                   (SELECT count(*) FROM attribution_events e
                     WHERE e.tenant_id = $1 AND e.revenue_cents > 0
                       AND e.processing_status = 'processed'
                       AND NOT EXISTS (SELECT 1 FROM per_event p WHERE p.event_id = e.id))
            """,
        )
    )[0]
    assert tuple(row) == (0, 0, 5, 5, 0)
    ranges = (
        await _rows(
            owner_pool,
            tenant_id,
            """
            SELECT count(*) FILTER (WHERE allocation_ratio NOT BETWEEN 0 AND 1
                                    OR confidence_score NOT BETWEEN 0 AND 1
                                    OR credible_interval_lower_cents > credible_interval_upper_cents
                                    OR convergence_r_hat <= 0 OR effective_sample_size < 0),
                   count(DISTINCT model_type)
            FROM attribution_allocations WHERE tenant_id = $1
            """,
        )
    )[0]
    assert tuple(ranges) == (0, 5)


async def test_ledger_matches_orders_and_last_touch_allocations(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = generated
    row = (
        await _rows(
            owner_pool,
            tenant_id,
            """
            SELECT count(*),
                   count(*) FILTER (WHERE e.raw_payload -> 'order' ->> 'id' = l.order_id
                                    AND e.revenue_cents = l.revenue_cents),
                   count(l.allocation_id),
                   count(*) FILTER (WHERE a.model_type = 'last_touch' AND a.event_id = e.id),
                   count(*) FILTER (WHERE l.state = 'captured')
            FROM revenue_ledger l
            JOIN attribution_events e
              ON e.tenant_id = l.tenant_id AND e.raw_payload -> 'order' ->> 'id' = l.order_id
            LEFT JOIN attribution_allocations a
              ON a.tenant_id = l.tenant_id AND a.id = l.allocation_id
            WHERE l.tenant_id = $1
            """,
        )
    )[0]
    total, matched, with_allocation, last_touch, captured = row
    assert total == matched == summary.revenue_ledger
    assert with_allocation == last_touch > 0.95 * total
    assert captured > 0.9 * total


async def test_weekends_differ_from_weekdays(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, _ = generated
    rows = await _rows(
        owner_pool,
        tenant_id,
        """
        SELECT extract(isodow FROM occurred_at AT TIME ZONE 'UTC') >= 6 AS weekend,
               count(*)::float8 / count(DISTINCT (occurred_at AT TIME ZONE 'UTC')::date),
               count(*) FILTER (WHERE channel = 'linkedin_paid')::float8 / count(*)
        FROM attribution_events WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1
        """,
    )
    (_, weekday_volume, weekday_b2b), (_, weekend_volume, weekend_b2b) = rows
    assert weekend_volume < 0.9 * weekday_volume
    assert weekend_b2b < 0.6 * weekday_b2b


# --------------------------------------------------------------------------------------------
# The planted anomalies
# --------------------------------------------------------------------------------------------


async def _weekly(
    pool: asyncpg.Pool, tenant_id: UUID, query: str, start: date, *args: Any
) -> list[float]:
    """Values of `query` (grouped by week) for the week at `start` and the four before it."""
    rows = await _rows(pool, tenant_id, query, *args)
    by_week = {row[0]: float(row[1]) for row in rows}
    return [by_week.get(start - timedelta(days=7 * k), 0.0) for k in range(5)]


async def test_paid_social_revenue_drops_in_the_last_full_week(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = generated
    drop = _anomaly(summary, "revenue_drop")
    assert (drop.channel, drop.start, drop.end) == (
        "facebook_paid",
        date(2026, 2, 23),
        date(2026, 3, 1),
    )
    query = """
        SELECT date_trunc('week', occurred_at AT TIME ZONE 'UTC')::date,
               sum(revenue_cents) FILTER (WHERE channel = $2),
               sum(revenue_cents) FILTER (WHERE channel <> $2)
        FROM attribution_events WHERE tenant_id = $1 GROUP BY 1
    """
    paid_social = await _weekly(owner_pool, tenant_id, query, drop.start, drop.channel)
    assert paid_social[0] < 0.75 * np.mean(paid_social[1:])
    others = await _weekly(
        owner_pool,
        tenant_id,
        query.replace("sum(revenue_cents) FILTER (WHERE channel = $2),", ""),
        drop.start,
        drop.channel,
    )
    assert others[0] > 0.85 * np.mean(others[1:])


async def test_refunds_and_chargebacks_are_audited_by_the_ledger_trigger(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = generated
    assert summary.revenue_state_transitions == summary.refunds + summary.chargebacks > 0
    row = (
        await _rows(
            owner_pool,
            tenant_id,
            """
            SELECT count(*),
                   count(*) FILTER (WHERE t.from_state = 'captured' AND t.to_state = l.state
                                    AND l.previous_state = 'captured'
                                    AND t.reason = l.metadata ->> 'state_change_reason'
                                    AND t.transitioned_at > l.posted_at
                                    AND t.transitioned_at < $2::date)
            FROM revenue_state_transitions t
            JOIN revenue_ledger l ON l.tenant_id = t.tenant_id AND l.id = t.ledger_id
            WHERE t.tenant_id = $1
            """,
            TODAY,
        )
    )[0]
    assert row[0] == row[1] == summary.revenue_state_transitions


async def test_refund_burst_on_one_channel(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = generated
    burst = _anomaly(summary, "refund_burst")
    rows = await _rows(
        owner_pool,
        tenant_id,
        """
        SELECT (posted_at AT TIME ZONE 'UTC')::date BETWEEN $3 AND $4 AS in_burst,
               count(*) FILTER (WHERE state IN ('refunded', 'chargeback'))::float8 / count(*)
        FROM revenue_ledger
        WHERE tenant_id = $1 AND metadata ->> 'channel_hint' = $2
        GROUP BY 1 ORDER BY 1
        """,
        burst.channel,
        burst.start,
        burst.end,
    )
    (_, usual_rate), (_, burst_rate) = rows
    assert burst_rate > 0.2 and burst_rate > 4 * usual_rate


async def test_dead_event_spike_for_one_source(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = generated
    spike = _anomaly(summary, "dead_event_spike")
    rows = await _rows(
        owner_pool,
        tenant_id,
        """
        SELECT (ingested_at AT TIME ZONE 'UTC')::date, count(*)
        FROM dead_events WHERE tenant_id = $1 AND source = $2 GROUP BY 1
        """,
        spike.source,
    )
    per_day = {row[0]: row[1] for row in rows}
    spike_days = [
        spike.start + timedelta(days=k) for k in range((spike.end - spike.start).days + 1)
    ]
    usual = [n for day, n in per_day.items() if day not in spike_days]
    assert len(spike_days) == 2
    assert min(per_day[day] for day in spike_days) > 10 * max(usual)
    statuses = await _value(
        owner_pool,
        tenant_id,
        "SELECT count(DISTINCT remediation_status) FROM dead_events WHERE tenant_id = $1",
    )
    assert statuses >= 3


async def test_channel_corrections_batch(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = generated
    batch = _anomaly(summary, "channel_corrections")
    rows = await _rows(
        owner_pool,
        tenant_id,
        """
        SELECT c.entity_type, c.from_channel, c.to_channel, count(*),
               count(*) FILTER (WHERE e.channel = c.from_channel
                                AND (e.occurred_at AT TIME ZONE 'UTC')::date BETWEEN $2 AND $3
                                OR a.channel_code = c.from_channel)
        FROM channel_assignment_corrections c
        LEFT JOIN attribution_events e
          ON c.entity_type = 'event' AND e.tenant_id = c.tenant_id AND e.id = c.entity_id
        LEFT JOIN attribution_allocations a
          ON c.entity_type = 'allocation' AND a.tenant_id = c.tenant_id AND a.id = c.entity_id
        WHERE c.tenant_id = $1 AND c.corrected_by = 'utm-audit-bot'
        GROUP BY 1, 2, 3 ORDER BY 1
        """,
        batch.start,
        batch.end,
    )
    by_type = {row[0]: tuple(row[1:]) for row in rows}
    events = by_type["event"]
    assert events[:2] == ("organic_social", "instagram_paid") and events[2] == events[3] >= 20
    assert by_type["allocation"][2] == by_type["allocation"][3] > 0
    dangling = await _value(
        owner_pool,
        tenant_id,
        """
        SELECT count(*) FROM channel_assignment_corrections c
        WHERE c.tenant_id = $1 AND c.from_channel = c.to_channel
           OR c.tenant_id = $1 AND NOT EXISTS (
                SELECT 1 FROM attribution_events e WHERE e.tenant_id = $1 AND e.id = c.entity_id
                UNION ALL
                SELECT 1 FROM attribution_allocations a
                 WHERE a.tenant_id = $1 AND a.id = c.entity_id)
        """,
    )
    assert dangling == 0


async def test_pii_scan_finds_the_nested_personal_data(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = generated
    async with owner_pool.acquire() as conn:
        await conn.fetchval("SELECT fn_scan_pii_contamination()")
    findings = await _rows(
        owner_pool,
        tenant_id,
        "SELECT table_name, detected_key FROM pii_audit_findings WHERE tenant_id = $1",
    )
    assert len(findings) >= summary.pii_payloads > 0
    assert {row["table_name"] for row in findings} == {"attribution_events", "dead_events"}
    assert all(row["detected_key"].count(".") >= 2 for row in findings)  # nested, not top level


# --------------------------------------------------------------------------------------------
# Determinism, isolation, roles, refusals
# --------------------------------------------------------------------------------------------


async def test_same_seed_gives_the_same_data_for_another_tenant(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary], new_tenant: UUID
) -> None:
    first_id, first = generated
    second = await _generate(owner_pool, new_tenant)
    assert dataclasses.replace(second, tenant_id=first_id) == first
    totals = """
        SELECT (SELECT sum(revenue_cents) FROM attribution_events WHERE tenant_id = $1),
               (SELECT sum(allocated_revenue_cents * (model_type = 'linear')::int)
                  FROM attribution_allocations WHERE tenant_id = $1),
               (SELECT sum(amount_cents) FROM revenue_ledger WHERE tenant_id = $1),
               (SELECT string_agg(channel, ',' ORDER BY idempotency_key)
                  FROM attribution_events WHERE tenant_id = $1)
    """
    first_totals = tuple((await _rows(owner_pool, first_id, totals))[0])
    assert tuple((await _rows(owner_pool, new_tenant, totals))[0]) == first_totals
    # Each tenant's rows are its own: per-tenant counts are exactly each summary's.
    assert await _table_counts(owner_pool, first_id) == first.table_counts()
    assert await _table_counts(owner_pool, new_tenant) == second.table_counts()
    shared = await _value(
        owner_pool,
        first_id,
        """
        SELECT count(*) FROM attribution_events a
        JOIN attribution_events b ON b.id = a.id AND b.tenant_id = $2
        WHERE a.tenant_id = $1
        """,
        new_tenant,
    )
    assert shared == 0


async def test_generates_as_the_application_role_under_rls(
    app_pool: asyncpg.Pool, other_tenant: CreatedTenant
) -> None:
    tenant_id = other_tenant.tenant_id
    summary = await _generate(app_pool, tenant_id, events=10_000, seed=11)
    assert summary.attribution_events == 10_000
    # Under RLS the unfiltered counts are this tenant's rows only.
    async with tenant_transaction(app_pool, tenant_id, readonly=True) as conn:
        visible = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in summary.table_counts()
        }
    assert visible == summary.table_counts()


async def test_refuses_to_generate_the_same_seed_twice(
    owner_pool: asyncpg.Pool, generated: tuple[UUID, DemoDataSummary]
) -> None:
    tenant_id, summary = generated
    with pytest.raises(DemoDataExists):
        await _generate(owner_pool, tenant_id)
    assert await _table_counts(owner_pool, tenant_id) == summary.table_counts()


async def test_rejects_a_transaction_set_for_another_tenant(
    owner_pool: asyncpg.Pool, new_tenant: UUID
) -> None:
    async with tenant_transaction(owner_pool, uuid4()) as conn:
        with pytest.raises(InvalidRequest):
            await generate_demo_data(conn, new_tenant, today=TODAY)


@pytest.mark.parametrize("kwargs", [{"events": 10}, {"events": 10**9}, {"seed": -1}])
async def test_rejects_bad_parameters(
    owner_pool: asyncpg.Pool, new_tenant: UUID, kwargs: dict[str, int]
) -> None:
    async with tenant_transaction(owner_pool, new_tenant) as conn:
        with pytest.raises(InvalidRequest):
            await generate_demo_data(conn, new_tenant, today=TODAY, **kwargs)


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weights"),
    [(1, [1.0]), (100, [1.0, 1.0, 1.0]), (9_999, [0.4, 0.1, 0.1, 0.4]), (7, [0.9, 0.05, 0.05])],
)
def test_split_cents_is_exact(total: int, weights: Sequence[float]) -> None:
    parts = _split_cents(total, weights)
    assert sum(parts) == total and all(p >= 0 for p in parts)
    assert max(abs(p - total * w / sum(weights)) for p, w in zip(parts, weights, strict=True)) < 1


def test_apportion_is_exact_and_unbiased() -> None:
    rng = np.random.default_rng(1)
    weights = np.array([0.5, 0.3, 0.15, 0.05])
    draws = np.array([_apportion(rng, 7, weights) for _ in range(4000)])
    assert (draws.sum(axis=1) == 7).all() and (draws >= 0).all()
    assert np.allclose(draws.mean(axis=0), 7 * weights, atol=0.06)


def test_model_weights() -> None:
    ages = [9.0, 3.0, 1.0, 0.0]
    assert _model_weights("last_touch", ages) == [0, 0, 0, 1]
    assert _model_weights("first_touch", ages) == [1, 0, 0, 0]
    assert _model_weights("linear", ages) == [1, 1, 1, 1]
    assert _model_weights("position_based", ages) == [0.4, 0.1, 0.1, 0.4]
    decay = _model_weights("time_decay", ages)
    assert decay == sorted(decay) and decay[-1] == 1.0


# --------------------------------------------------------------------------------------------
# Every plant stays clearly visible at the smallest size accepted
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("events", [1_000, 3_000])
async def test_every_plant_is_visible_at_small_sizes(owner_pool: asyncpg.Pool, events: int) -> None:
    created = await create_tenant(owner_pool, f"small-{events}-{uuid4().hex[:6]}")
    summary = await _generate(owner_pool, created.tenant_id, events=events, seed=21)
    assert summary.attribution_events == events
    tid, week = created.tenant_id, timedelta(days=7)
    drop = _anomaly(summary, "revenue_drop")
    revenue = (
        "SELECT coalesce(sum(revenue_cents), 0) FROM attribution_events WHERE tenant_id = $1"
        " AND channel = $2 AND occurred_at >= $3::date AND occurred_at < $4::date"
    )
    cur = await _value(owner_pool, tid, revenue, drop.channel, drop.start, drop.start + week)
    prev = await _value(owner_pool, tid, revenue, drop.channel, drop.start - week, drop.start)
    assert cur < prev * 7 / 10  # at least a 30% drop week over week

    burst = _anomaly(summary, "refund_burst")
    per_channel = dict(
        await _rows(
            owner_pool,
            tid,
            "SELECT a.channel_code, count(*) FROM revenue_state_transitions t"
            " JOIN revenue_ledger l ON l.id = t.ledger_id"
            " JOIN attribution_allocations a ON a.id = l.allocation_id"
            " WHERE t.tenant_id = $1 AND t.transitioned_at >= $2::date"
            " AND t.transitioned_at < $3::date GROUP BY 1",
            burst.start,
            burst.start + 2 * week,
        )
    )
    top = per_channel.pop(burst.channel, 0)
    assert top >= 5 and top >= 3 * max(per_channel.values(), default=0)

    spike = _anomaly(summary, "dead_event_spike")
    per_source = dict(
        await _rows(
            owner_pool,
            tid,
            "SELECT source, count(*) FROM dead_events WHERE tenant_id = $1"
            " AND ingested_at >= $2::date AND ingested_at < $3::date GROUP BY 1",
            spike.start,
            spike.end + timedelta(days=1),
        )
    )
    spiked = per_source.pop(spike.source, 0)
    assert spiked >= 50 and spiked >= 5 * max(per_source.values(), default=0)

    fix = _anomaly(summary, "channel_corrections")
    corrected = await _value(
        owner_pool,
        tid,
        "SELECT count(*) FROM channel_assignment_corrections c"
        " JOIN attribution_events e ON e.id = c.entity_id"
        " WHERE c.tenant_id = $1 AND c.entity_type = 'event' AND c.to_channel = $2"
        " AND e.occurred_at >= $3::date AND e.occurred_at < $4::date",
        fix.channel,
        fix.start,
        fix.start + week,
    )
    assert corrected >= 5
