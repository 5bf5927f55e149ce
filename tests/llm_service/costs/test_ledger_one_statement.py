"""The gateway's reserve and settle, each ONE statement outside a transaction block, attacked as
llm_app: the tenant and the run's lease token are set inside the statement and nowhere else."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from llm_service.costs import ledger_repository
from llm_service.costs.ledger_repository import (
    CallReservation,
    MonthlyCapExceeded,
    reserve_call,
    reserve_call_alone,
    settle_call,
    settle_call_alone,
)
from llm_service.db.pool import tenant_transaction
from llm_service.tenants.service import CreatedTenant


def _call(tenant_id: UUID, usd: str = "0.002", **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "endpoint": "explanations",
        "model": "openai/gpt-4o-mini",
        "provider": "openai",
        "worst_case_usd": Decimal(usd),
        "lease_seconds": 60.0,
        "max_tokens": 100,
        **extra,
    }


async def _row(owner_pool: asyncpg.Pool, call_id: UUID) -> asyncpg.Record:
    async with owner_pool.acquire() as conn:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT * FROM llm_api_calls WHERE id = $1", call_id
        )
    return row


async def _setting(conn: asyncpg.Connection, name: str) -> str:
    value: str | None = await conn.fetchval("SELECT current_setting($1, true)", name)
    return value or ""


async def _findings(owner_pool: asyncpg.Pool, tenant_id: UUID) -> list[asyncpg.Record]:
    async with owner_pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT source, table_name, detected_key, finding_kind, redacted_snippet "
            "FROM pii_audit_findings WHERE tenant_id = $1 ORDER BY detected_key",
            tenant_id,
        )
    return rows


async def test_reserve_and_settle_set_the_tenant_for_their_statement_only(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with app_pool.acquire() as conn:
        held = await reserve_call_alone(conn, run_token=None, **_call(tenant.tenant_id))
        assert not conn.is_in_transaction()
        assert await _setting(conn, "app.current_tenant_id") == ""
        # Nothing of the tenant is visible on this connection after the statement.
        assert await conn.fetchval("SELECT count(*) FROM llm_api_calls") == 0
        settled = await settle_call_alone(
            conn, held, run_token=None, status="succeeded", cost_usd=Decimal("0.0015")
        )
        assert settled
        assert await _setting(conn, "app.current_tenant_id") == ""
        assert await _setting(conn, "llm.run_token") == ""
        # The settle's commit skips the WAL flush wait; nothing after it on this connection
        # (the next reservation) may inherit that.
        assert await _setting(conn, "synchronous_commit") == "on"
    row = await _row(owner_pool, held.call_id)
    assert row["tenant_id"] == tenant.tenant_id and row["status"] == "succeeded"
    assert row["cost_cents"] == Decimal("0.15") and row["reserved_cents"] == Decimal("0.2")
    async with owner_pool.acquire() as conn:
        month = await conn.fetchval(
            "SELECT total_cost_cents FROM llm_monthly_costs WHERE tenant_id = $1",
            tenant.tenant_id,
        )
    assert month == Decimal("0.15")


async def test_a_settle_naming_another_tenant_settles_nothing(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    async with app_pool.acquire() as conn:
        held = await reserve_call_alone(conn, run_token=None, **_call(tenant.tenant_id))
        # Even with the call's own settle token: the tenant is what refuses it.
        forged = CallReservation(
            held.call_id,
            other_tenant.tenant_id,
            held.reserved_usd,
            held.expires_at,
            held.settle_token,
        )
        assert not await settle_call_alone(
            conn, forged, run_token=None, status="failed", cost_usd=Decimal(0)
        )
    assert (await _row(owner_pool, held.call_id))["status"] == "pending"


async def test_settling_twice_is_refused_the_second_time(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with app_pool.acquire() as conn:
        held = await reserve_call_alone(conn, run_token=None, **_call(tenant.tenant_id))
        first = await settle_call_alone(
            conn, held, run_token=None, status="succeeded", cost_usd=Decimal("0.001")
        )
        again = await settle_call_alone(
            conn, held, run_token=None, status="succeeded", cost_usd=Decimal("0.002")
        )
    assert (first, again) == (True, False)
    assert (await _row(owner_pool, held.call_id))["cost_cents"] == Decimal("0.1")


async def test_findings_are_written_with_the_reservation_and_only_with_it(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    findings = [("messages[0].content", "email"), ("messages[1].content", "phone")]
    async with owner_pool.acquire() as conn:
        await conn.execute(
            "UPDATE tenants SET monthly_cap_cents = 1 WHERE id = $1", tenant.tenant_id
        )
    async with app_pool.acquire() as conn:
        with pytest.raises(MonthlyCapExceeded):
            await reserve_call_alone(
                conn, run_token=None, findings=findings, **_call(tenant.tenant_id, "0.5")
            )
        assert await _findings(owner_pool, tenant.tenant_id) == []
        await reserve_call_alone(
            conn, run_token=None, findings=findings, **_call(tenant.tenant_id, "0.001")
        )
    rows = [tuple(r) for r in await _findings(owner_pool, tenant.tenant_id)]
    assert rows == [
        ("llm_guard", "explanations", "messages[0].content", "email", "[REDACTED:email]"),
        ("llm_guard", "explanations", "messages[1].content", "phone", "[REDACTED:phone]"),
    ]


async def _running_run(owner_pool: asyncpg.Pool, tenant_id: UUID) -> tuple[UUID, UUID]:
    token = uuid.uuid4()
    async with owner_pool.acquire() as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps, status, lease_owner, lease_expires_at, lease_token_hash) "
            "VALUES ($1, 'why?', 30, 60000, 8, 'running', 'w', now() + interval '1 minute', "
            "sha256(uuid_send($2::uuid))) RETURNING id",
            tenant_id,
            token,
        )
    return run_id, token


@pytest.mark.parametrize("presented", ["none", "forged"])
async def test_a_running_runs_reservation_needs_its_lease_token_in_the_statement(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant, presented: str
) -> None:
    run_id, token = await _running_run(owner_pool, tenant.tenant_id)
    wrong = None if presented == "none" else uuid.uuid4()
    async with app_pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reserve_call_alone(
                conn, run_token=wrong, **_call(tenant.tenant_id, investigation_id=run_id)
            )
        held = await reserve_call_alone(
            conn, run_token=token, **_call(tenant.tenant_id, investigation_id=run_id)
        )
        assert await _setting(conn, "llm.run_token") == ""
        assert await settle_call_alone(
            conn, held, run_token=token, status="succeeded", cost_usd=Decimal("0.001")
        )
    async with owner_pool.acquire() as conn:
        spent = await conn.fetchval("SELECT cost_cents FROM investigations WHERE id = $1", run_id)
    assert spent == Decimal("0.1")


async def test_the_settle_sets_the_tenant_before_it_reads_a_row(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """The settle function (migration 012) is called in the projection of `s`'s one row, so
    after `s` set the tenant and token; the statement reads no ledger row itself, and it
    settles the row (the transactional fallback is not what did it)."""
    async with app_pool.acquire() as conn:
        held = await reserve_call_alone(conn, run_token=None, **_call(tenant.tenant_id))
        args = [held.call_id, tenant.tenant_id, "failed", None, None, Decimal(0), False]
        args += [None] * 7 + [None, held.settle_token]
        plan = [
            r[0]
            for r in await conn.fetch(
                "EXPLAIN VERBOSE " + ledger_repository._SETTLE_ALONE_SQL, *args
            )
        ]
        assert "CTE Scan on s" in plan[0], plan
        assert "fn_settle_call" in next(line for line in plan if "Output:" in line), plan
        assert not any("llm_api_calls" in line for line in plan), plan
        settled = await conn.fetchval(ledger_repository._SETTLE_ALONE_SQL, *args)
    assert settled is True
    status = await owner_pool.fetchval(
        "SELECT status FROM llm_api_calls WHERE id = $1", held.call_id
    )
    assert status == "failed"


async def test_both_reserve_paths_keep_only_the_settle_tokens_hash(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """Migration 012: each call gets its own secret; the row keeps its sha256, never the token
    (nor does a repr show it); a reservation of the same call without it, or with another
    call's, settles nothing; the reserving one settles it."""
    async with app_pool.acquire() as conn:
        alone = await reserve_call_alone(conn, run_token=None, **_call(tenant.tenant_id))
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        in_tx = await reserve_call(conn, **_call(tenant.tenant_id))
    for held in (alone, in_tx):
        assert held.settle_token is not None
        assert str(held.settle_token) not in repr(held)
        row = await _row(owner_pool, held.call_id)
        assert row["settle_token_hash"] == hashlib.sha256(held.settle_token.bytes).digest()
        assert str(held.settle_token) not in str(dict(row))
    assert alone.settle_token != in_tx.settle_token
    async with app_pool.acquire() as conn:
        for token in (None, in_tx.settle_token, uuid.uuid4()):
            stolen = dataclasses.replace(alone, settle_token=token)
            assert not await settle_call_alone(
                conn, stolen, run_token=None, status="succeeded", cost_usd=Decimal(0)
            )
        assert await settle_call_alone(
            conn, alone, run_token=None, status="succeeded", cost_usd=Decimal("0.001")
        )
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        stolen = dataclasses.replace(in_tx, settle_token=alone.settle_token)
        assert not await settle_call(conn, stolen, status="failed", cost_usd=Decimal(0))
        assert await settle_call(conn, in_tx, status="failed", cost_usd=Decimal(0))
    assert (await _row(owner_pool, alone.call_id))["cost_cents"] == Decimal("0.1")
