"""Red team: a ledger row is settled only by the request that reserved it (migration 012).

Each test acts as a compromised llm_app session (any GUC, no other request's token)."""

from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal

import asyncpg
import pytest

from llm_service.tenants.service import CreatedTenant

SETTLE = (
    "SELECT fn_settle_call($1, 'succeeded', 1, 1, $2::numeric, false, 1, NULL, NULL, NULL, "
    "NULL, NULL, NULL, $3::uuid)"
)


async def _as_tenant(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
    await conn.execute("SELECT set_config('app.current_tenant_id', $1, true)", str(tenant_id))


async def _reserve(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, token: uuid.UUID | None
) -> uuid.UUID:
    """An explanation call (no run) reserved at 5 cents with the sha256 of `token`."""
    call = uuid.uuid4()
    async with conn.transaction():
        await _as_tenant(conn, tenant_id)
        await conn.execute(
            "INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, "
            "attempt, reserved_cents, reservation_expires_at, max_tokens, settle_token_hash) "
            "VALUES ($1, $2, $3, 'explanations', 'gpt-4o-mini', 'openai', 1, 5, "
            "now() + interval '1 hour', 10, "
            "CASE WHEN $4::uuid IS NULL THEN NULL ELSE sha256(uuid_send($4::uuid)) END)",
            call,
            tenant_id,
            f"req-{call.hex[:8]}",
            token,
        )
    return call


async def _settle(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    call: uuid.UUID,
    token: uuid.UUID | None,
    cost: str = "1",
) -> bool:
    async with conn.transaction():
        await _as_tenant(conn, tenant_id)
        settled: bool = await conn.fetchval(SETTLE, call, cost, token)
    return settled


async def _status(conn: asyncpg.Connection, tenant_id: uuid.UUID, call: uuid.UUID) -> str:
    async with conn.transaction():
        await _as_tenant(conn, tenant_id)
        status: str = await conn.fetchval("SELECT status FROM llm_api_calls WHERE id = $1", call)
    return status


async def test_guessed_tokens_settle_nothing_and_the_honest_settle_still_works(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """NULL, zero, random, another call's token and the stored hash itself all fail."""
    token, other_token = uuid.uuid4(), uuid.uuid4()
    call = await _reserve(app_conn, tenant.tenant_id, token)
    await _reserve(app_conn, tenant.tenant_id, other_token)
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        stored: bytes = await app_conn.fetchval(
            "SELECT settle_token_hash FROM llm_api_calls WHERE id = $1", call
        )
    assert stored == hashlib.sha256(token.bytes).digest()
    guesses = [
        None,
        uuid.UUID(int=0),
        uuid.uuid4(),
        other_token,
        uuid.UUID(bytes=stored[:16]),
        uuid.UUID(bytes=stored[16:]),
        call,
    ]
    for guess in guesses:
        assert await _settle(app_conn, tenant.tenant_id, call, guess, "0") is False
    assert await _status(app_conn, tenant.tenant_id, call) == "pending"
    assert await _settle(app_conn, tenant.tenant_id, call, token, "3") is True
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        row = await app_conn.fetchrow(
            "SELECT status, cost_cents FROM llm_api_calls WHERE id = $1", call
        )
    assert (row["status"], row["cost_cents"]) == ("succeeded", Decimal(3))
    # Settled once: the right token again does nothing.
    assert await _settle(app_conn, tenant.tenant_id, call, token, "0") is False


async def test_another_tenants_call_cannot_be_settled_or_duplicated(
    app_conn: asyncpg.Connection, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    """With the victim's token but the attacker's tenant, or a forged row with the same id."""
    token = uuid.uuid4()
    call = await _reserve(app_conn, other_tenant.tenant_id, token)
    assert await _settle(app_conn, tenant.tenant_id, call, token, "0") is False
    # A forged row with the victim's id and a hash the attacker chose: refused by the key.
    forged_token = uuid.uuid4()
    with pytest.raises(asyncpg.UniqueViolationError):
        async with app_conn.transaction():
            await _as_tenant(app_conn, tenant.tenant_id)
            await app_conn.execute(
                "INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, "
                "provider, attempt, reserved_cents, reservation_expires_at, max_tokens, "
                "settle_token_hash) VALUES ($1, $2, 'forged', 'explanations', 'm', 'openai', 1, "
                "5, now() + interval '1 hour', 10, sha256(uuid_send($3::uuid)))",
                call,
                tenant.tenant_id,
                forged_token,
            )
    assert await _settle(app_conn, tenant.tenant_id, call, forged_token, "0") is False
    assert await _status(app_conn, other_tenant.tenant_id, call) == "pending"
    assert await _settle(app_conn, other_tenant.tenant_id, call, token, "2") is True


async def test_settle_stays_within_the_reservation_and_above_zero(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """Even with its own token, a call settles neither below zero nor above its reservation."""
    token = uuid.uuid4()
    call = await _reserve(app_conn, tenant.tenant_id, token)
    for cost in ("-1", "5.01"):
        with pytest.raises(asyncpg.CheckViolationError):
            await _settle(app_conn, tenant.tenant_id, call, token, cost)
    assert await _status(app_conn, tenant.tenant_id, call) == "pending"
    assert await _settle(app_conn, tenant.tenant_id, call, token, "5") is True


async def test_a_row_without_a_hash_is_never_settled_by_the_app(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """A call of no run inserted with a NULL hash has no secret: no token settles it."""
    call = await _reserve(app_conn, tenant.tenant_id, None)
    for guess in (None, uuid.UUID(int=0), uuid.uuid4()):
        assert await _settle(app_conn, tenant.tenant_id, call, guess, "0") is False
    assert await _status(app_conn, tenant.tenant_id, call) == "pending"


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT 1 FROM llm_api_calls WHERE id = $1 FOR UPDATE",
        "SELECT 1 FROM llm_api_calls WHERE id = $1 FOR KEY SHARE",
        "UPDATE llm_api_calls SET status = 'abandoned' WHERE id = $1",
        "UPDATE llm_api_calls SET settle_token_hash = NULL WHERE id = $1",
        "DELETE FROM llm_api_calls WHERE id = $1",
        "SELECT 1 FROM run_cancel_requests WHERE run_id = $1 FOR KEY SHARE",
        "INSERT INTO run_cancel_requests (tenant_id, run_id, kind) "
        "VALUES (current_setting('app.current_tenant_id')::uuid, $1, 'investigation')",
        "UPDATE run_cancel_requests SET requested_at = now() WHERE run_id = $1",
        "DELETE FROM run_cancel_requests WHERE run_id = $1",
    ],
)
async def test_the_app_can_neither_lock_nor_write_ledger_rows_or_cancel_requests(
    app_conn: asyncpg.Connection, tenant: CreatedTenant, statement: str
) -> None:
    """Every lock-taking or writing statement a session could hold open is refused."""
    call = await _reserve(app_conn, tenant.tenant_id, uuid.uuid4())
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with app_conn.transaction():
            await _as_tenant(app_conn, tenant.tenant_id)
            await app_conn.execute(statement, call)


async def test_cancel_of_an_unknown_or_foreign_run_writes_no_request(
    app_conn: asyncpg.Connection, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    """No FK, so the definer must refuse: a run id of nothing (or of no running run) gets no row."""
    ghost = uuid.uuid4()
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        rows = await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", ghost)
        assert rows == []
        assert await app_conn.fetchval("SELECT fn_run_cancel_requested($1)", ghost) is False
        count = await app_conn.fetchval("SELECT count(*) FROM run_cancel_requests")
    assert count == 0
