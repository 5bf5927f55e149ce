"""The spend ledger against the real database, as the application role."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest

from llm_service.costs.ledger_repository import (
    CallReservation,
    MonthlyCapExceeded,
    cap_status,
    reserve_call,
    settle_call,
    sweep_expired_reservations,
)
from llm_service.db.pool import tenant_transaction
from llm_service.tenants.service import CreatedTenant
from tests.helpers.waiting import wait_for_lease_end


async def _set_cap(owner_pool: asyncpg.Pool, tenant_id: UUID, cents: str) -> None:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        await conn.execute(
            "UPDATE tenants SET monthly_cap_cents = $2 WHERE id = $1", tenant_id, Decimal(cents)
        )


async def _reserve(
    pool: asyncpg.Pool, tenant_id: UUID, usd: str, *, lease_seconds: float = 60
) -> CallReservation:
    async with tenant_transaction(pool, tenant_id) as conn:
        return await reserve_call(
            conn,
            tenant_id=tenant_id,
            endpoint="explanations",
            model="openai/gpt-4o-mini",
            provider="openai",
            worst_case_usd=Decimal(usd),
            lease_seconds=lease_seconds,
            max_tokens=100,
        )


async def _call_row(pool: asyncpg.Pool, tenant_id: UUID, call_id: UUID) -> asyncpg.Record:
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow("SELECT * FROM llm_api_calls WHERE id = $1", call_id)
    assert row is not None
    return row


async def _monthly(pool: asyncpg.Pool, tenant_id: UUID) -> asyncpg.Record | None:
    async with tenant_transaction(pool, tenant_id) as conn:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT * FROM llm_monthly_costs WHERE tenant_id = $1", tenant_id
        )
    return row


async def test_reservation_refused_when_worst_case_does_not_fit(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    await _set_cap(owner_pool, tid, "1.0")
    await _reserve(app_pool, tid, "0.008")  # 0.8 cents
    with pytest.raises(MonthlyCapExceeded) as refused:
        await _reserve(app_pool, tid, "0.003")
    assert refused.value.cap_cents == Decimal("1.0")
    assert refused.value.committed_cents == Decimal("0.8")
    assert refused.value.needed_cents == Decimal("0.3")
    await _reserve(app_pool, tid, "0.002")  # exactly fills the cap
    with pytest.raises(MonthlyCapExceeded):
        await _reserve(app_pool, tid, "0.0000000000001")  # the smallest amount the ledger holds
    async with tenant_transaction(app_pool, tid) as conn:
        assert await conn.fetchval("SELECT count(*) FROM llm_api_calls") == 2


async def test_settle_replaces_reservation(app_pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    tid = tenant.tenant_id
    reservation = await _reserve(app_pool, tid, "0.005")
    assert reservation.reserved_usd == Decimal("0.005")
    async with tenant_transaction(app_pool, tid) as conn:
        before = await cap_status(conn, tid)
    assert (before.spent_cents, before.reserved_cents) == (Decimal(0), Decimal("0.5"))

    async with tenant_transaction(app_pool, tid) as conn:
        settled = await settle_call(
            conn,
            reservation,
            status="succeeded",
            cost_usd=Decimal("0.00000015"),  # gpt-4o-mini, one input token
            input_tokens=1,
            output_tokens=0,
            latency_ms=12,
        )
        after = await cap_status(conn, tid)
    assert settled is True
    assert (after.spent_cents, after.reserved_cents) == (Decimal("0.000015"), Decimal(0))

    row = await _call_row(app_pool, tid, reservation.call_id)
    assert row["status"] == "succeeded"
    assert row["cost_cents"] == Decimal("0.0000150000")
    assert row["reserved_cents"] == Decimal("0.5")
    assert row["settled_at"] is not None
    assert row["cost_is_estimate"] is False
    monthly = await _monthly(app_pool, tid)
    assert monthly is not None
    assert monthly["total_cost_cents"] == Decimal("0.000015")
    assert monthly["total_calls"] == 1
    assert monthly["model_breakdown"]["openai/gpt-4o-mini"]["cost_cents"] == Decimal("0.000015")


async def test_settled_row_is_immutable(app_pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    tid = tenant.tenant_id
    reservation = await _reserve(app_pool, tid, "0.001")
    async with tenant_transaction(app_pool, tid) as conn:
        await settle_call(conn, reservation, status="failed", cost_usd=Decimal(0))
    # llm_app may not UPDATE a ledger row at all (migration 012: it settles through
    # fn_settle_call); the trigger keeps a settled row final for the definer roles too.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_pool, tid) as conn:
            await conn.execute(
                "UPDATE llm_api_calls SET cost_cents = 1 WHERE id = $1", reservation.call_id
            )
    async with tenant_transaction(app_pool, tid) as conn:
        again = await settle_call(conn, reservation, status="succeeded", cost_usd=Decimal("0.01"))
    assert again is False
    row = await _call_row(app_pool, tid, reservation.call_id)
    assert (row["status"], row["cost_cents"]) == ("failed", 0)


async def test_settle_refuses_unknown_status(app_pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    reservation = await _reserve(app_pool, tenant.tenant_id, "0.001")
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(ValueError, match="unknown call status"):
            await settle_call(conn, reservation, status="pending", cost_usd=Decimal(0))


async def test_sweep_settles_expired_reservation_as_abandoned(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    reservation = await _reserve(app_pool, tid, "0.003123456789", lease_seconds=0.01)
    await wait_for_lease_end(app_pool, tid, reservation.call_id)
    async with app_pool.acquire() as conn, conn.transaction():
        assert await sweep_expired_reservations(conn) >= 1
    row = await _call_row(app_pool, tid, reservation.call_id)
    assert row["status"] == "abandoned"
    assert row["cost_cents"] == row["reserved_cents"] == Decimal("0.3123456789")
    assert row["cost_is_estimate"] is True
    assert row["error_type"] == "lease_expired"
    monthly = await _monthly(app_pool, tid)
    assert monthly is not None
    assert monthly["total_cost_cents"] == Decimal("0.3123456789")
    assert monthly["estimated_cost_cents"] == Decimal("0.3123456789")
    assert monthly["total_calls"] == 1
    async with tenant_transaction(app_pool, tid) as conn:
        late = await settle_call(conn, reservation, status="succeeded", cost_usd=Decimal("0"))
    assert late is False  # the process that comes back too late cannot undo the charge


async def test_next_reservation_sweeps_expired_one(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    await _set_cap(owner_pool, tid, "1.0")
    expired = await _reserve(app_pool, tid, "0.006", lease_seconds=0.01)
    await wait_for_lease_end(app_pool, tid, expired.call_id)
    await _reserve(app_pool, tid, "0.004")  # fits beside the abandoned 0.6 cents
    row = await _call_row(app_pool, tid, expired.call_id)
    assert (row["status"], row["cost_cents"], row["cost_is_estimate"]) == (
        "abandoned",
        Decimal("0.6"),
        True,
    )
    async with tenant_transaction(app_pool, tid) as conn:
        status = await cap_status(conn, tid)
    assert (status.spent_cents, status.reserved_cents) == (Decimal("0.6"), Decimal("0.4"))


async def test_cap_status_numbers(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    tid = tenant.tenant_id
    await _set_cap(owner_pool, tid, "10")
    first = await _reserve(app_pool, tid, "0.05")
    async with tenant_transaction(app_pool, tid) as conn:
        await settle_call(conn, first, status="succeeded", cost_usd=Decimal("0.025"))
    await _reserve(app_pool, tid, "0.015")
    async with tenant_transaction(app_pool, tid) as conn:
        status = await cap_status(conn, tid)
    assert status.cap_cents == Decimal("10")
    assert status.spent_cents == Decimal("2.5")
    assert status.reserved_cents == Decimal("1.5")
    assert status.available_cents == Decimal("6.0")

    await _set_cap(owner_pool, tid, "3")  # lowered below what is committed: nothing available
    async with tenant_transaction(app_pool, tid) as conn:
        lowered = await cap_status(conn, tid)
    assert lowered.available_cents == 0


async def test_cap_status_of_invisible_tenant_fails(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    async with tenant_transaction(app_pool, other_tenant.tenant_id) as conn:
        with pytest.raises(LookupError):
            await cap_status(conn, tenant.tenant_id)
