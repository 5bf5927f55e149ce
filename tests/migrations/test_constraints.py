"""Data governance in the database: CHECK constraints, append-only facts, audits, exact money."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest
from tenant_rows import (
    insert_allocation,
    insert_dead_event,
    insert_event,
    insert_investigation,
    insert_ledger,
    insert_llm_call,
)

from llm_service.db.pool import tenant_transaction
from llm_service.tenants.service import CreatedTenant
from tests.helpers.app_role import insert_pending

CheckViolation = asyncpg.exceptions.CheckViolationError


class Rollback(Exception):
    """Raised to abandon a transaction on purpose."""


async def _expect_check_violation(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    statement: str,
    *args: object,
    constraint: str | None = None,
) -> CheckViolation:
    with pytest.raises(CheckViolation) as caught:
        async with tenant_transaction(pool, tenant_id) as conn:
            await conn.execute(statement, *args)
    if constraint is not None:
        assert caught.value.constraint_name == constraint, caught.value
    return caught.value


# --------------------------------------------------------------------------------------------
# Money, ratios, confidences, states
# --------------------------------------------------------------------------------------------


async def test_negative_event_revenue_is_rejected(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    with pytest.raises(CheckViolation) as caught:
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await insert_event(conn, tenant.tenant_id, revenue_cents=-1)
    assert caught.value.constraint_name == "ck_attribution_events_revenue"


@pytest.mark.parametrize(
    "column, value, constraint",
    [
        ("allocated_revenue_cents", -1, "ck_attribution_allocations_revenue"),
        ("allocation_ratio", Decimal("1.5"), "ck_attribution_allocations_ratio"),
        ("allocation_ratio", Decimal("-0.01"), "ck_attribution_allocations_ratio"),
        ("confidence_score", Decimal("-0.1"), "ck_attribution_allocations_confidence"),
        ("confidence_score", Decimal("1.0001"), "ck_attribution_allocations_confidence"),
    ],
)
async def test_allocation_money_ratio_and_confidence_bounds(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, column: str, value: object, constraint: str
) -> None:
    values = {
        "allocated_revenue_cents": 100,
        "allocation_ratio": Decimal(1),
        "confidence_score": Decimal("0.9"),
    }
    values[column] = value  # type: ignore[assignment]
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        event_id = await insert_event(conn, tenant.tenant_id)
    await _expect_check_violation(
        app_pool,
        tenant.tenant_id,
        """INSERT INTO attribution_allocations (tenant_id, event_id, channel_code,
               allocated_revenue_cents, allocation_ratio, model_type, confidence_score)
           VALUES ($1, $2, 'facebook_paid', $3, $4, 'last_touch', $5)""",
        tenant.tenant_id,
        event_id,
        values["allocated_revenue_cents"],
        values["allocation_ratio"],
        values["confidence_score"],
        constraint=constraint,
    )


async def test_negative_ledger_amount_is_rejected(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    await _expect_check_violation(
        app_pool,
        tenant.tenant_id,
        """INSERT INTO revenue_ledger (tenant_id, transaction_id, state, amount_cents,
               revenue_cents) VALUES ($1, 'txn-neg', 'captured', -1, 0)""",
        tenant.tenant_id,
        constraint="ck_revenue_ledger_amount",
    )


async def test_negative_llm_call_cost_is_rejected(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    token = uuid.uuid4()
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        call_id = await insert_pending(conn, tenant.tenant_id, Decimal(1), settle_token=token)
    await _expect_check_violation(
        app_pool,
        tenant.tenant_id,
        # The app's settle (migration 012: llm_app may not UPDATE a ledger row itself; the
        # reserving request presents its settle token).
        "SELECT fn_settle_call($1, 'succeeded', NULL, NULL, -0.0000000001, false, NULL, NULL,"
        " NULL, NULL, NULL, NULL, NULL, $2)",
        call_id,
        token,
        constraint="ck_llm_api_calls_cost",
    )


@pytest.mark.parametrize(
    "statement, constraint",
    [
        (
            "INSERT INTO investigations (tenant_id, question, status) VALUES ($1, 'q?', 'paused')",
            "ck_investigations_status",
        ),
        (
            "INSERT INTO revenue_ledger (tenant_id, transaction_id, state, amount_cents,"
            " revenue_cents) VALUES ($1, 'txn-state', 'pending', 1, 1)",
            "ck_revenue_ledger_state",
        ),
        (
            "INSERT INTO dead_events (tenant_id, source, error_type, error_message,"
            " remediation_status) VALUES ($1, 's', 'E', 'm', 'x')",
            "ck_dead_events_remediation_status",
        ),
    ],
)
async def test_unknown_states_are_rejected(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant, statement: str, constraint: str
) -> None:
    await _expect_check_violation(
        owner_pool, tenant.tenant_id, statement, tenant.tenant_id, constraint=constraint
    )


async def test_unknown_taxonomy_state_is_rejected(owner_pool: asyncpg.Pool) -> None:
    # The taxonomy is global reference data: only the owner writes it.
    with pytest.raises(CheckViolation) as caught:
        async with owner_pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO channel_taxonomy (code, family, display_name, state)"
                " VALUES ('test_gone', 'test', 'Gone', 'gone')"
            )
    assert caught.value.constraint_name == "ck_channel_taxonomy_state"


# --------------------------------------------------------------------------------------------
# Investigation ceilings
# --------------------------------------------------------------------------------------------


async def test_investigation_spend_above_its_ceiling_is_rejected(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    await _expect_check_violation(
        owner_pool,
        tenant.tenant_id,
        "INSERT INTO investigations (tenant_id, question, max_cost_cents, cost_cents)"
        " VALUES ($1, 'q?', 10, 10.0000000001)",
        tenant.tenant_id,
        constraint="ck_investigations_within_ceiling",
    )
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        run_id = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, cost_cents)"
            " VALUES ($1, 'q?', 10, 10) RETURNING id",
            tenant.tenant_id,
        )
    await _expect_check_violation(
        owner_pool,
        tenant.tenant_id,
        "UPDATE investigations SET cost_cents = cost_cents + 0.5 WHERE id = $1",
        run_id,
        constraint="ck_investigations_within_ceiling",
    )


async def test_investigation_ceiling_above_thirty_cents_is_rejected(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    await _expect_check_violation(
        app_pool,
        tenant.tenant_id,
        "INSERT INTO investigations (tenant_id, question, max_cost_cents)"
        " VALUES ($1, 'q?', 30.0000000001)",
        tenant.tenant_id,
        constraint="ck_investigations_max_cost",
    )
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        row = await conn.fetchrow(
            "INSERT INTO investigations (tenant_id, question) VALUES ($1, 'q?')"
            " RETURNING max_cost_cents, timeout_ms",
            tenant.tenant_id,
        )
    assert row is not None
    assert (row["max_cost_cents"], row["timeout_ms"]) == (Decimal(30), 60000)


async def test_investigation_timeout_above_sixty_seconds_is_rejected(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    await _expect_check_violation(
        app_pool,
        tenant.tenant_id,
        "INSERT INTO investigations (tenant_id, question, timeout_ms) VALUES ($1, 'q?', 60001)",
        tenant.tenant_id,
        constraint="ck_investigations_timeout",
    )
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        await conn.execute(
            "INSERT INTO investigations (tenant_id, question, timeout_ms) VALUES ($1, 'q?', 60000)",
            tenant.tenant_id,
        )


# --------------------------------------------------------------------------------------------
# Allocations add up; events are facts; ledger changes are audited
# --------------------------------------------------------------------------------------------


async def test_allocations_not_summing_to_event_revenue_are_rejected(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        event_id = await insert_event(conn, tenant.tenant_id, revenue_cents=100)
    with pytest.raises(CheckViolation, match="sum to 60 cents, event revenue is 100"):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await insert_allocation(conn, tenant.tenant_id, event_id, cents=60)
    # A split written together that adds up is accepted (and one cent of rounding is tolerated).
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        await conn.execute(
            """INSERT INTO attribution_allocations (tenant_id, event_id, channel_code,
                   allocated_revenue_cents, allocation_ratio, model_type)
               VALUES ($1, $2, 'facebook_paid', 67, 0.66666667, 'linear'),
                      ($1, $2, 'email', 34, 0.33333333, 'linear')""",
            tenant.tenant_id,
            event_id,
        )
    # Changing one allocation so the split no longer adds up is rejected as well.
    with pytest.raises(CheckViolation):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "UPDATE attribution_allocations SET allocated_revenue_cents = 10"
                " WHERE event_id = $1 AND channel_code = 'email'",
                event_id,
            )


async def test_event_revenue_is_append_only_but_processing_status_may_change(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        event_id = await insert_event(conn, tenant.tenant_id, revenue_cents=100)
    with pytest.raises(CheckViolation, match="append-only"):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "UPDATE attribution_events SET revenue_cents = 200 WHERE id = $1", event_id
            )
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        status = await conn.execute(
            "UPDATE attribution_events SET processing_status = 'processed', processed_at = now(),"
            " retry_count = retry_count + 1 WHERE id = $1",
            event_id,
        )
        row = await conn.fetchrow(
            "SELECT revenue_cents, processing_status FROM attribution_events WHERE id = $1",
            event_id,
        )
    assert status == "UPDATE 1"
    assert row is not None and tuple(row) == (100, "processed")


async def test_ledger_state_change_writes_a_state_transition(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        ledger_id = await insert_ledger(conn, tenant.tenant_id, state="captured")
        await conn.execute(
            "UPDATE revenue_ledger SET state = 'refunded',"
            ' metadata = metadata || \'{"state_change_reason": "customer refund"}\'::jsonb'
            " WHERE id = $1",
            ledger_id,
        )
        # A change of something else writes no transition.
        await conn.execute("UPDATE revenue_ledger SET order_id = 'o-2' WHERE id = $1", ledger_id)
        transitions = await conn.fetch(
            "SELECT tenant_id, from_state, to_state, reason FROM revenue_state_transitions"
            " WHERE ledger_id = $1",
            ledger_id,
        )
        previous = await conn.fetchval(
            "SELECT previous_state FROM revenue_ledger WHERE id = $1", ledger_id
        )
    assert [tuple(t) for t in transitions] == [
        (tenant.tenant_id, "captured", "refunded", "customer refund")
    ]
    assert previous == "captured"


# --------------------------------------------------------------------------------------------
# The LLM call ledger and monthly costs
# --------------------------------------------------------------------------------------------

SETTLE = """UPDATE llm_api_calls SET status = 'succeeded', cost_cents = $2, input_tokens = $3,
                output_tokens = $4, settled_at = now() WHERE id = $1"""
MONTH = datetime(2026, 3, 15, 12, tzinfo=UTC)


async def test_settled_llm_call_cannot_change_its_cost(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        call_id = await insert_llm_call(conn, tenant.tenant_id, started_at=MONTH)
        await conn.execute(SETTLE, call_id, Decimal("0.0000150000"), 10, 5)
    for statement in (
        "UPDATE llm_api_calls SET cost_cents = 0 WHERE id = $1",
        "UPDATE llm_api_calls SET cost_cents = cost_cents + 1 WHERE id = $1",
        "UPDATE llm_api_calls SET status = 'failed' WHERE id = $1",
        "UPDATE llm_api_calls SET output_tokens = 0 WHERE id = $1",
    ):
        with pytest.raises(CheckViolation, match="settled"):
            async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
                await conn.execute(statement, call_id)
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        cost = await conn.fetchval("SELECT cost_cents FROM llm_api_calls WHERE id = $1", call_id)
    assert cost == Decimal("0.0000150000")


async def _monthly(conn: asyncpg.Connection, tenant_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT total_cost_cents, total_calls, total_input_tokens, total_output_tokens,
                  (model_breakdown -> 'model-a' ->> 'cost_cents')::numeric AS model_a_cost,
                  (model_breakdown -> 'model-a' ->> 'calls')::bigint AS model_a_calls,
                  (model_breakdown -> 'model-b' ->> 'cost_cents')::numeric AS model_b_cost,
                  (endpoint_breakdown -> 'explanations' ->> 'cost_cents')::numeric AS explain_cost,
                  (endpoint_breakdown -> 'investigations' ->> 'cost_cents')::numeric AS invest_cost,
                  (endpoint_breakdown -> 'investigations' ->> 'calls')::bigint AS invest_calls,
                  (SELECT count(*) FROM jsonb_object_keys(model_breakdown)) AS models
           FROM llm_monthly_costs WHERE tenant_id = $1 AND month = '2026-03-01'""",
        tenant_id,
    )


async def test_settling_a_call_updates_monthly_costs_exactly_in_the_same_transaction(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    async with tenant_transaction(owner_pool, tid) as conn:
        first = await insert_llm_call(conn, tid, model="model-a", started_at=MONTH)
        second = await insert_llm_call(
            conn, tid, model="model-a", endpoint="investigations", started_at=MONTH
        )
        third = await insert_llm_call(conn, tid, model="model-b", started_at=MONTH)
        assert await _monthly(conn, tid) is None, "a pending call must not count yet"
        await conn.execute(SETTLE, first, Decimal("0.0000150000"), 10, 5)
        # Visible inside the settling transaction, before commit.
        row = await _monthly(conn, tid)
        assert row is not None
        assert row["total_cost_cents"] == Decimal("0.0000150000")
        assert row["total_calls"] == 1

    # A settlement that is rolled back leaves the monthly row untouched.
    with pytest.raises(Rollback):
        async with tenant_transaction(owner_pool, tid) as conn:
            await conn.execute(SETTLE, second, Decimal("7"), 1, 1)
            assert (await _monthly(conn, tid))["total_calls"] == 2  # type: ignore[index]
            raise Rollback

    async with tenant_transaction(owner_pool, tid) as conn:
        await conn.execute(SETTLE, second, Decimal("0.0000025000"), 3, 4)
        await conn.execute(SETTLE, third, Decimal("0.1234567891"), 100, 200)
        row = await _monthly(conn, tid)
        reconciled = await conn.fetch(
            "SELECT * FROM fn_reconcile_monthly_costs('2026-03-01') WHERE tenant_id = $1", tid
        )
    assert row is not None
    assert row["total_cost_cents"] == Decimal("0.1234742891")
    assert row["total_calls"] == 3
    assert (row["total_input_tokens"], row["total_output_tokens"]) == (113, 209)
    assert row["model_a_cost"] == Decimal("0.0000175000")
    assert row["model_a_calls"] == 2
    assert row["model_b_cost"] == Decimal("0.1234567891")
    assert row["explain_cost"] == Decimal("0.1234717891")
    assert row["invest_cost"] == Decimal("0.0000025000")
    assert row["invest_calls"] == 1
    assert row["models"] == 2
    # Finance's proof: the recorded month equals the sum of its calls, breakdowns included.
    assert len(reconciled) == 1
    rec = reconciled[0]
    assert rec["recorded_cost_cents"] == rec["computed_cost_cents"] == Decimal("0.1234742891")
    assert rec["recorded_calls"] == rec["computed_calls"] == 3
    assert rec["breakdowns_match"] is True


async def test_app_role_cannot_write_monthly_costs_directly(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    for statement in (
        "INSERT INTO llm_monthly_costs (tenant_id, month) VALUES ($1, '2026-04-01')",
        "UPDATE llm_monthly_costs SET total_cost_cents = 0 WHERE tenant_id = $1",
        "DELETE FROM llm_monthly_costs WHERE tenant_id = $1",
    ):
        with pytest.raises(
            asyncpg.exceptions.InsufficientPrivilegeError, match="permission denied for table"
        ):
            async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
                await conn.execute(statement, tenant.tenant_id)


async def test_dead_event_remediation_can_progress(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        dead_id = await insert_dead_event(conn, tenant.tenant_id)
        await conn.execute(
            "UPDATE dead_events SET remediation_status = 'resolved', resolved_at = now()"
            " WHERE id = $1",
            dead_id,
        )
    await _expect_check_violation(
        app_pool,
        tenant.tenant_id,
        "UPDATE dead_events SET remediation_status = 'x' WHERE id = $1",
        dead_id,
        constraint="ck_dead_events_remediation_status",
    )


async def test_investigation_status_accepts_every_terminal_state(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    states = [
        "queued",
        "running",
        "succeeded",
        "budget_exhausted",
        "timed_out",
        "failed",
        "cancelled",
    ]
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        run_id = await insert_investigation(
            conn, tenant.tenant_id, idempotency_key=uuid.uuid4().hex
        )
        for state in states:
            await conn.execute("UPDATE investigations SET status = $2 WHERE id = $1", run_id, state)
