"""Red team (issue 10): attacks on the trust promises, each asserting the SAFE behaviour.

A test that passes means the attack was refused. Tests marked `BROKE:` in their docstring
reproduce an attack that succeeded when written; they assert the safe behaviour and so fail
until the product is fixed.

Everything runs against the real PostgreSQL built by the migrations, as the application role
(llm_app) where the attacker is the application; providers are mocked with respx in the OpenAI
wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import respx

from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.llm.gateway import LlmGateway, LlmRequest, ProviderUnavailable
from llm_service.llm.pricing import build_price_book
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from llm_service.verify import run_checks
from llm_service.workers.sweeper import sweep_once
from tests.helpers.app_role import (
    insert_pending,
    lease_run,
    present_session_token,
    set_session_tenant,
)
from tests.helpers.openai_stub import fast_backoff

OPENAI_URL = "https://api.openai.com/v1/chat/completions"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


async def refused(conn: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.PostgresError:
    """Run `sql`; assert the database refused it; return the error."""
    with pytest.raises(asyncpg.PostgresError) as info:
        await conn.execute(sql, *args)
    return info.value


async def month_total(owner_pool: asyncpg.Pool, tenant_id: uuid.UUID) -> Decimal:
    total: Decimal = await owner_pool.fetchval(
        "SELECT coalesce(sum(total_cost_cents), 0) FROM llm_monthly_costs WHERE tenant_id = $1",
        tenant_id,
    )
    return total


async def committed(owner_pool: asyncpg.Pool, tenant_id: uuid.UUID) -> Decimal:
    """Settled this month plus everything still reserved."""
    pending: Decimal = await owner_pool.fetchval(
        "SELECT coalesce(sum(reserved_cents), 0) FROM llm_api_calls "
        "WHERE tenant_id = $1 AND status = 'pending'",
        tenant_id,
    )
    return pending + await month_total(owner_pool, tenant_id)


@pytest.fixture
async def capped_tenant(owner_pool: asyncpg.Pool) -> CreatedTenant:
    """A fresh tenant whose monthly cap is 100 cents."""
    return await create_tenant(
        owner_pool, f"rt-{uuid.uuid4().hex[:8]}", monthly_cap_cents=Decimal(100)
    )


# ---------------------------------------------------------------------------------------------
# 2. A lying provider
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_backoff(monkeypatch)


@pytest.fixture
def gateway(
    test_settings: Settings, app_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> LlmGateway:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "llm_max_attempts": 1}
    )
    return LlmGateway(settings, app_pool, build_price_book(settings))


def completion_text(
    usage: str = '{"prompt_tokens": 12, "completion_tokens": 3}', **top: str
) -> str:
    """A chat completion body as raw JSON text (so it can carry what json.dumps never writes)."""
    fields = {
        "id": '"chatcmpl-rt"',
        "object": '"chat.completion"',
        "created": "1764000000",
        "model": '"gpt-4o-mini-2024-07-18"',
        "choices": '[{"index": 0, "message": {"role": "assistant", "content": "ok"}, '
        '"finish_reason": "stop"}]',
        "usage": usage,
    }
    fields.update(top)
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"


def reply(text: str, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, content=text.encode(), headers={"content-type": "application/json"}
    )


async def rows_of(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
    async with tenant_transaction(pool, tenant_id) as conn:
        return list(await conn.fetch("SELECT * FROM llm_api_calls ORDER BY created_at"))


async def call_and_rows(
    gateway: LlmGateway, pool: asyncpg.Pool, tenant: CreatedTenant, response: httpx.Response
) -> list[asyncpg.Record]:
    """One completion against a provider answering `response`; the tenant's ledger after it."""
    with respx.mock:
        respx.post(OPENAI_URL).mock(return_value=response)
        request = LlmRequest(
            tenant_id=tenant.tenant_id,
            endpoint="explanations",
            messages=[{"role": "user", "content": "Why did paid social revenue drop?"}],
            max_tokens=50,
        )
        try:
            await gateway.complete(request)
        except Exception as exc:  # the run may fail; the money must still be settled
            LAST_ERROR[tenant.tenant_id] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return await rows_of(pool, tenant.tenant_id)


LAST_ERROR: dict[uuid.UUID, str] = {}


def assert_settled_within(rows: list[asyncpg.Record]) -> None:
    assert rows, "no ledger row was written"
    for row in rows:
        raised = LAST_ERROR.get(row["tenant_id"], "nothing")
        assert row["status"] != "pending", f"ledger row left pending; the call raised {raised}"
        assert row["cost_cents"] <= row["reserved_cents"]


USAGE_LIES = {
    "nan_extra_field": '{"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, '
    '"lie": NaN}',
    "infinity_total": '{"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": Infinity}',
    "overflow_float_detail": '{"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, '
    '"prompt_tokens_details": {"cached_tokens": 1e400}}',
    "nul_in_extra_string": '{"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, '
    '"note": "a\\u0000b"}',
    "lone_surrogate": '{"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, '
    '"note": "\\ud800"}',
    "float_tokens": '{"prompt_tokens": 12.0, "completion_tokens": 3.5, "total_tokens": 15}',
    "string_tokens": '{"prompt_tokens": "12", "completion_tokens": "3"}',
    "huge_tokens": '{"prompt_tokens": 1000000000000000000000, "completion_tokens": 3}',
    "negative_tokens": '{"prompt_tokens": -5, "completion_tokens": -3}',
    "null_usage": "null",
    "usage_is_list": "[1, 2, 3]",
}


@pytest.mark.parametrize("lie", sorted(USAGE_LIES))
async def test_usage_lies_settle_within_reservation(
    lie: str, gateway: LlmGateway, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """Usage lies in JSON a JSON encoder would never write (NaN, Infinity, NUL, surrogates).

    BROKE for nan_extra_field, nul_in_extra_string, lone_surrogate: raw_usage (jsonb) cannot
    hold them, the settling UPDATE raises outside the failure path and the row stays pending
    until the sweeper counts it at its worst case (timeout + 30 s + a sweep interval later).
    """
    rows = await call_and_rows(gateway, app_pool, tenant, reply(completion_text(USAGE_LIES[lie])))
    assert_settled_within(rows)


ID_LIES = {
    "nul_in_id": '"chatcmpl-\\u0000"',
    "surrogate_in_id": '"chatcmpl-\\udfff"',
    "integer_id": "123456",
    "object_id": '{"x": 1}',
    "huge_id": json.dumps("x" * 200_000),
}


@pytest.mark.parametrize("lie", sorted(ID_LIES))
async def test_response_id_lies_settle(
    lie: str, gateway: LlmGateway, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """The response's `id` goes to provider_request_id unfiltered.

    BROKE for nul_in_id, surrogate_in_id, integer_id, object_id: the settling UPDATE raises
    (a NUL or surrogate in text; asyncpg wants a str) and the row stays pending.
    """
    rows = await call_and_rows(gateway, app_pool, tenant, reply(completion_text(id=ID_LIES[lie])))
    assert_settled_within(rows)


ERROR_LIES = {
    "nul_message_400": (400, '{"error": {"message": "bad\\u0000request", "type": "x"}}'),
    "nul_message_500": (500, '{"error": {"message": "oops\\u0000", "type": "x"}}'),
    "surrogate_message_400": (400, '{"error": {"message": "bad\\ud800", "type": "x"}}'),
    "raw_nul_text_body_400": (400, "plain \x00 text"),
}


@pytest.mark.parametrize("lie", sorted(ERROR_LIES))
async def test_error_body_lies_settle(
    lie: str, gateway: LlmGateway, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """The error text goes to error_message: a NUL in it must not leave the row pending.

    BROKE for nul_message_400, nul_message_500, surrogate_message_400: the failure path's own
    settlement raises, so even an error answer (owed nothing) leaves its row pending, later
    counted at its worst case by the sweeper.
    """
    status, body = ERROR_LIES[lie]
    rows = await call_and_rows(gateway, app_pool, tenant, reply(body, status))
    assert_settled_within(rows)
    assert all(r["cost_cents"] == 0 for r in rows)  # an answered error status is not billed


async def test_refused_connection_costs_zero(
    gateway: LlmGateway, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    with respx.mock:
        respx.post(OPENAI_URL).mock(side_effect=httpx.ConnectError("connection refused"))
        with pytest.raises(ProviderUnavailable):
            await gateway.complete(
                LlmRequest(
                    tenant_id=tenant.tenant_id,
                    endpoint="explanations",
                    messages=[{"role": "user", "content": "hi"}],
                    max_tokens=50,
                )
            )
    rows = await rows_of(app_pool, tenant.tenant_id)
    assert_settled_within(rows)
    assert all(r["cost_cents"] == 0 for r in rows)


# ---------------------------------------------------------------------------------------------
# 1. A compromised application-role session
# ---------------------------------------------------------------------------------------------

CREATION_ATTEMPTS = {
    "temp_table": "CREATE TEMP TABLE f (x int)",
    "temp_table_like_ledger": "CREATE TEMP TABLE f (LIKE llm_api_calls INCLUDING DEFAULTS)",
    "pg_temp_qualified": "CREATE TABLE pg_temp.f (x int)",
    "table_in_public": "CREATE TABLE public.f (x int)",
    "schema": "CREATE SCHEMA rt_attacker",
    "function_in_public": "CREATE FUNCTION public.rt_f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "view_in_public": "CREATE VIEW public.rt_v AS SELECT 1",
    "temp_view": "CREATE TEMP VIEW rt_v AS SELECT 1",
    "temp_sequence": "CREATE TEMP SEQUENCE rt_s",
    "type": "CREATE TYPE public.rt_t AS (x int)",
    "lo_create": "SELECT lo_create(0)",
    "lo_creat": "SELECT lo_creat(-1)",
    "lo_from_bytea": "SELECT lo_from_bytea(0, 'x')",
    "lo_import": "SELECT lo_import('/etc/hostname')",
    "extension": "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "trigger_on_ledger": "CREATE TRIGGER rt AFTER INSERT ON llm_api_calls FOR EACH ROW "
    "EXECUTE FUNCTION fn_llm_api_calls_rollup()",
    "disable_trigger": "ALTER TABLE llm_api_calls DISABLE TRIGGER trg_llm_api_calls_reserve",
    "replica_role": "SET session_replication_role = replica",
    "set_role_crosstenant": "SET ROLE llm_crosstenant",
    "set_role_owner": "SET ROLE postgres",
    "session_authorization": "SET SESSION AUTHORIZATION postgres",
    "copy_to_program": "COPY (SELECT 1) TO PROGRAM 'true'",
    "copy_from_file": "COPY llm_monthly_costs FROM '/etc/hostname'",
    "read_server_file": "SELECT pg_read_file('/etc/hostname')",
    "setval_sequence": "SELECT setval('investigation_events_seq_seq', 1)",
    "grant_execute_internal": "GRANT EXECUTE ON FUNCTION fn_llm_api_calls_rollup() TO llm_app",
    "create_policy": "CREATE POLICY rt ON investigations USING (true)",
    "comment_on_table": "COMMENT ON TABLE llm_monthly_costs IS 'owned'",
    "refresh_cap": "UPDATE tenants SET monthly_cap_cents = 1000000",
    "lock_table_exclusive": "LOCK TABLE llm_monthly_costs IN ACCESS EXCLUSIVE MODE",
    "truncate_monthly": "TRUNCATE llm_monthly_costs",
    "delete_ledger": "DELETE FROM llm_api_calls",
    "delete_run": "DELETE FROM investigations",
}


@pytest.mark.parametrize("attempt", sorted(CREATION_ATTEMPTS))
async def test_app_role_cannot_create_or_widen(app_conn: asyncpg.Connection, attempt: str) -> None:
    sql = CREATION_ATTEMPTS[attempt]
    if attempt == "lock_table_exclusive":
        async with app_conn.transaction():
            await refused(app_conn, sql)
        return
    await refused(app_conn, sql)


INTERNAL_FUNCTIONS = [
    "fn_llm_api_calls_rollup()",
    "fn_llm_api_calls_reserve()",
    "fn_llm_api_calls_run_spend()",
    "fn_llm_api_calls_settled_immutable()",
    "fn_set_updated_at()",
    "fn_breakdown_add(jsonb, text, numeric, bigint, bigint)",
    "fn_check_allocation_sums()",
]


@pytest.mark.parametrize("signature", INTERNAL_FUNCTIONS)
async def test_internal_functions_not_executable(
    app_conn: asyncpg.Connection, signature: str
) -> None:
    assert not await app_conn.fetchval(
        "SELECT has_function_privilege('llm_app', $1, 'EXECUTE')", signature
    )


async def test_every_executable_function_of_ours_is_one_the_app_calls(
    app_conn: asyncpg.Connection,
) -> None:
    """Nothing beyond the service's own calls (an allowlist, so a new grant is noticed).

    Was BROKE (minor): llm_app could run fn_scan_pii_contamination, a full rescan of every
    tenant (seconds each on PostgreSQL 15), with no caller in the service. The scan is now
    incremental (migration 005: a queue filled by triggers, drained in bounded batches) and
    `llm-service pii-scan` drains it as the application role: a call with nothing new costs
    milliseconds, so both scan functions are on the list.
    """
    names = {
        r[0]
        for r in await app_conn.fetch(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND has_function_privilege('llm_app', p.oid, 'EXECUTE') "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"
        )
    }
    assert names <= {
        "fn_purge_expired_explanation_cache", "fn_reconcile_monthly_costs", "fn_claim_next_run",
        "fn_renew_leases", "fn_cancel_investigation", "fn_finish_investigation",
        "fn_finish_optimization", "fn_hand_back_run", "fn_settle_call", "fn_run_write_lock",
        "fn_queue_depth", "fn_finance_monthly_costs", "fn_purge_llm_call_prompts",
        "fn_purge_llm_validation_payloads", "fn_tenant_for_api_key_hash",
        "fn_sweep_expired_llm_reservations", "fn_run_cancel_requested",
        "fn_finance_daily_costs", "fn_normalize_json_key", "fn_is_personal_key",
        "fn_jsonb_personal_paths", "fn_scan_pii_contamination", "fn_pii_scan_batch",
    }  # fmt: skip


MONEY_WRITES = {
    "monthly_insert": "INSERT INTO llm_monthly_costs (tenant_id, month, total_cost_cents) "
    "VALUES ($1, date_trunc('month', now())::date, 123456.789)",
    "monthly_update": "UPDATE llm_monthly_costs SET total_cost_cents = 0 WHERE tenant_id = $1",
    "run_ceiling": "UPDATE investigations SET max_cost_cents = 30 WHERE tenant_id = $1",
    "run_cost": "UPDATE investigations SET cost_cents = 0 WHERE tenant_id = $1",
    "run_timeout": "UPDATE investigations SET timeout_ms = 60000 WHERE tenant_id = $1",
    "run_steps": "UPDATE investigations SET max_steps = 50 WHERE tenant_id = $1",
    "run_tenant": "UPDATE investigations SET tenant_id = tenant_id WHERE tenant_id = $1",
    "run_insert_with_cost": "INSERT INTO investigations (tenant_id, question, cost_cents) "
    "VALUES ($1, 'q', 0)",
    "job_ceiling": "UPDATE budget_optimization_jobs SET max_cost_cents = 30 WHERE tenant_id = $1",
    "job_cost": "UPDATE budget_optimization_jobs SET cost_cents = 0 WHERE tenant_id = $1",
    "ledger_reserved": "UPDATE llm_api_calls SET reserved_cents = 99 WHERE tenant_id = $1",
    "ledger_started_at": "UPDATE llm_api_calls SET started_at = now() - interval '40 days' "
    "WHERE tenant_id = $1",
    "ledger_owner": "UPDATE llm_api_calls SET investigation_id = NULL WHERE tenant_id = $1",
    "ledger_expiry": "UPDATE llm_api_calls SET reservation_expires_at = 'infinity' "
    "WHERE tenant_id = $1",
    "ledger_insert_settled": "INSERT INTO llm_api_calls (tenant_id, request_id, endpoint, model, "
    "provider, reserved_cents, reservation_expires_at, status, cost_cents, settled_at) "
    "VALUES ($1, 'x', 'explanations', 'm', 'p', 1, now(), 'succeeded', 1, now())",
    "ledger_insert_started_at": "INSERT INTO llm_api_calls (tenant_id, request_id, endpoint, "
    "model, provider, reserved_cents, reservation_expires_at, started_at) VALUES ($1, 'x', "
    "'explanations', 'm', 'p', 1, now(), now() - interval '40 days')",
    "copy_into_monthly": "COPY llm_monthly_costs (tenant_id, month) FROM STDIN",
}


@pytest.mark.parametrize("write", sorted(MONEY_WRITES))
async def test_committed_money_and_limits_are_read_only(
    app_conn: asyncpg.Connection, tenant: CreatedTenant, write: str
) -> None:
    await set_session_tenant(app_conn, tenant.tenant_id)
    sql = MONEY_WRITES[write]
    if write == "copy_into_monthly":
        with pytest.raises(asyncpg.PostgresError):
            await app_conn.copy_records_to_table(
                "llm_monthly_costs",
                records=[(tenant.tenant_id, None)],
                columns=["tenant_id", "month"],
            )
        return
    await refused(app_conn, sql, tenant.tenant_id)


async def test_settlement_is_bounded_and_final(
    app_conn: asyncpg.Connection, capped_tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """Above the reservation, negative, back to pending, re-settled: each refused."""
    tid = capped_tenant.tenant_id
    await set_session_tenant(app_conn, tid)
    token = uuid.uuid4()
    call = await insert_pending(app_conn, tid, Decimal(10), settle_token=token)
    raw_settle = (
        "UPDATE llm_api_calls SET status = $2, cost_cents = $3, settled_at = now() WHERE id = $1"
    )
    # Migration 012: llm_app may not UPDATE (nor lock) a ledger row; fn_settle_call settles it.
    settle = (
        "SELECT fn_settle_call($1, $2, NULL, NULL, $3, false, NULL, NULL, NULL, NULL, NULL, "
        f"NULL, NULL, '{token}')"
    )
    for cost in (Decimal("10.0000000001"), Decimal(-5), Decimal("NaN"), Decimal(3)):
        await refused(app_conn, raw_settle, call, "succeeded", cost)
    await refused(app_conn, settle, call, "succeeded", Decimal("10.0000000001"))
    await refused(app_conn, settle, call, "succeeded", Decimal(-5))
    await refused(app_conn, settle, call, "succeeded", Decimal("NaN"))
    await refused(app_conn, settle, call, "pending", Decimal(0))
    assert await app_conn.fetchval(settle, call, "succeeded", Decimal(3)) is True
    assert await app_conn.fetchval(settle, call, "failed", Decimal(0)) is False  # settled once
    await refused(app_conn, raw_settle, call, "failed", Decimal(0))
    await refused(
        app_conn,
        "UPDATE llm_api_calls SET status = 'pending', settled_at = NULL WHERE id = $1",
        call,
    )
    await refused(app_conn, "UPDATE llm_api_calls SET raw_usage = '{}' WHERE id = $1", call)
    assert await month_total(owner_pool, tid) == Decimal(3)


async def test_cross_tenant_writes_refused(
    app_conn: asyncpg.Connection, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    """With tenant A set: a ledger row or a run for B, or A's row pointing at B's run."""
    async with tenant_transaction_of(app_conn, other_tenant.tenant_id):
        victim_run = await app_conn.fetchval(
            "INSERT INTO investigations (tenant_id, question) VALUES ($1, 'q') RETURNING id",
            other_tenant.tenant_id,
        )
    await set_session_tenant(app_conn, tenant.tenant_id)
    with pytest.raises(asyncpg.PostgresError):
        await insert_pending(app_conn, other_tenant.tenant_id, Decimal(1))
    await refused(
        app_conn,
        "INSERT INTO investigations (tenant_id, question) VALUES ($1, 'q')",
        other_tenant.tenant_id,
    )
    # A's own ledger row naming B's run: refused (migration 010), and B's run is not charged.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await insert_pending(app_conn, tenant.tenant_id, Decimal(1), investigation_id=victim_run)
    async with tenant_transaction_of(app_conn, other_tenant.tenant_id):
        assert (
            await app_conn.fetchval(
                "SELECT cost_cents FROM investigations WHERE id = $1", victim_run
            )
            == 0
        )


class tenant_transaction_of:
    """Set the tenant for the duration of a block on a raw connection."""

    def __init__(self, conn: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    async def __aenter__(self) -> None:
        self.previous = await self.conn.fetchval(
            "SELECT current_setting('app.current_tenant_id', true)"
        )
        await set_session_tenant(self.conn, self.tenant_id)

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.execute(
            "SELECT set_config('app.current_tenant_id', $1, false)", self.previous or ""
        )


async def test_run_ceiling_holds_against_direct_reservations(
    app_conn: asyncpg.Connection, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """Reserving past a run's ceiling directly in the ledger: the run's CHECK refuses."""
    await set_session_tenant(app_conn, tenant.tenant_id)
    run = await app_conn.fetchval(
        "INSERT INTO investigations (tenant_id, question, max_cost_cents) VALUES ($1, 'q', 1) "
        "RETURNING id",
        tenant.tenant_id,
    )
    await present_session_token(app_conn, await lease_run(owner_pool, tenant.tenant_id, run))
    await insert_pending(app_conn, tenant.tenant_id, Decimal("0.6"), investigation_id=run)
    with pytest.raises(asyncpg.PostgresError):
        await insert_pending(app_conn, tenant.tenant_id, Decimal("0.6"), investigation_id=run)
    spent = await owner_pool.fetchval("SELECT cost_cents FROM investigations WHERE id = $1", run)
    assert spent <= 1


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
async def test_snapshot_isolation_cannot_pass_the_monthly_cap(
    database_urls: DatabaseUrls,
    capped_tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    isolation: str,
) -> None:
    """BROKE (REPEATABLE READ): two sessions each reserve 80 of a 100-cent cap.

    The cap trigger takes the per-tenant advisory lock and then sums the pending rows, but under
    REPEATABLE READ its snapshot predates the lock, so the second session never sees the first
    session's committed reservation. Both commit; settled at their reservations the month is 160.
    (SERIALIZABLE: its read/write dependency tracking aborts one of them.)
    """
    tid = capped_tenant.tenant_id
    first = await asyncpg.connect(database_urls.app)
    second = await asyncpg.connect(database_urls.app)
    try:
        for conn in (first, second):
            await set_session_tenant(conn, tid)
            await conn.execute(f"BEGIN ISOLATION LEVEL {isolation}")
            await conn.fetchval("SELECT count(*) FROM llm_api_calls")  # takes the snapshot
        # Refusing the reservation outright (only READ COMMITTED may reserve) is safe too.
        a: uuid.UUID | None = None
        try:
            a = await insert_pending(first, tid, Decimal(80))
            await first.execute("COMMIT")
        except asyncpg.InvalidTransactionStateError:
            await first.execute("ROLLBACK")
        b: uuid.UUID | None = None
        try:
            b = await insert_pending(second, tid, Decimal(80))
            await second.execute("COMMIT")
        except asyncpg.PostgresError:
            await second.execute("ROLLBACK")
        settle = (
            "UPDATE llm_api_calls SET status = 'succeeded', cost_cents = reserved_cents, "
            "settled_at = now() WHERE id = $1"
        )
        for call in (a, b):
            if call is not None:
                await first.execute(settle, call)
    finally:
        await first.close()
        await second.close()
    assert await committed(owner_pool, tid) <= 100
    assert await month_total(owner_pool, tid) <= 100


async def test_app_session_cannot_stop_the_sweeper_with_its_advisory_lock(
    app_conn: asyncpg.Connection, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """BROKE: a session holding the sweeper's election key stops every process's sweep.

    `sweep_once` elects with pg_try_advisory_xact_lock on a fixed key any app session may take
    (session-level) and keep: every round then returns None and no expired reservation of any
    tenant is settled until that tenant happens to reserve again.
    """
    await app_conn.execute(
        "SELECT pg_advisory_lock(hashtextextended('llm-reservation-sweeper', 0))"
    )
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        call = await insert_pending(
            conn, tenant.tenant_id, Decimal(1), expires="now() - interval '1 minute'"
        )
    try:
        await sweep_once(app_pool)
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            status = await conn.fetchval("SELECT status FROM llm_api_calls WHERE id = $1", call)
    finally:
        await app_conn.execute(
            "SELECT pg_advisory_unlock(hashtextextended('llm-reservation-sweeper', 0))"
        )
        await sweep_once(app_pool)
    assert status != "pending", "the expired reservation was not swept"


async def test_app_session_with_no_tenant_cannot_block_another_tenants_reservations(
    app_conn: asyncpg.Connection, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """BROKE: a session with no tenant takes the victim's cap lock; its reservations hang.

    The key `llm-cap:<tenant id>` is public knowledge (it is in the migration) and the advisory
    lock functions are executable by every role; the victim's next reservation waits for as
    long as the attacker likes (until statement_timeout fails the call).
    """
    key = f"llm-cap:{tenant.tenant_id}"
    await app_conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
    blocked_pid: list[int] = []

    async def victim_reserves() -> None:
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            blocked_pid.append(await conn.fetchval("SELECT pg_backend_pid()"))
            await insert_pending(conn, tenant.tenant_id, Decimal(1))

    task = asyncio.create_task(victim_reserves())
    waiting = False
    try:
        # Synchronise on an event: the reservation finishes, or its backend waits on the lock.
        while not task.done():
            if blocked_pid:
                waiting = bool(
                    await app_conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 "
                        "AND locktype = 'advisory' AND NOT granted)",
                        blocked_pid[0],
                    )
                )
                if waiting:
                    break
            await asyncio.sleep(0.01)  # polling pg_locks, bounded above
    finally:
        await app_conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
        await task
    assert not waiting, "the victim's reservation waited on a lock a tenantless session held"


async def test_claim_refuses_an_absurd_lease(
    app_conn: asyncpg.Connection, other_tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """BROKE: fn_claim_next_run takes any lease: 10^9 s (31 years) holds a victim's run forever.

    A crafted argument to a definer function acting on another tenant's run: with no tenant set
    the attacker claims the oldest queued run of any tenant; no worker ever takes it over.
    """
    await owner_pool.execute(
        "UPDATE investigations SET status = 'cancelled' WHERE status = 'queued'"
    )
    await owner_pool.execute(
        "UPDATE budget_optimization_jobs SET status = 'cancelled' WHERE status = 'queued'"
    )
    async with tenant_transaction_of(app_conn, other_tenant.tenant_id):
        run = await app_conn.fetchval(
            "INSERT INTO investigations (tenant_id, question) VALUES ($1, 'q') RETURNING id",
            other_tenant.tenant_id,
        )
    try:
        with pytest.raises(asyncpg.PostgresError):
            await app_conn.fetch("SELECT * FROM fn_claim_next_run('attacker', 1e9)")
        lease = await owner_pool.fetchval(
            "SELECT lease_expires_at - now() FROM investigations WHERE id = $1", run
        )
        assert lease is None or lease.days < 1
    finally:
        await owner_pool.execute(
            "UPDATE investigations SET status = 'cancelled' "
            "WHERE id = $1 OR lease_owner = 'attacker'",
            run,
        )


async def test_purge_cannot_erase_other_tenants_prompts_inside_their_retention(
    app_conn: asyncpg.Connection, other_tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """BROKE: the retention purge takes its cutoff from the caller, bounded only by 'one day'.

    Retention is RETENTION_PROMPT_DAYS (30 by default), but a tenantless app session may pass
    `now() - 1 day - 1 s` and erase every tenant's prompts and responses 29 days early.
    """
    async with tenant_transaction_of(app_conn, other_tenant.tenant_id):
        call = await insert_pending(app_conn, other_tenant.tenant_id, Decimal(0))
    await owner_pool.execute(
        "UPDATE llm_api_calls SET status = 'failed', settled_at = now(), "
        "created_at = now() - interval '2 days', request_metadata = '{\"prompt\": \"secret\"}' "
        "WHERE id = $1",
        call,
    )
    with contextlib.suppress(asyncpg.PostgresError):
        await app_conn.fetchval(
            "SELECT fn_purge_llm_call_prompts(now() - interval '1 day 1 second', 100000)"
        )
    metadata = await owner_pool.fetchval(
        "SELECT request_metadata FROM llm_api_calls WHERE id = $1", call
    )
    assert "prompt" in metadata, "a 2-day-old prompt was purged inside a 30-day retention"


# ---------------------------------------------------------------------------------------------
# 3. Holes `llm-service verify` must not miss
# ---------------------------------------------------------------------------------------------


async def verify_failures(database_urls: DatabaseUrls) -> list[str]:
    """The names of the verify checks that fail on the session's database right now."""
    owner = await asyncpg.connect(database_urls.owner)
    app = await asyncpg.connect(database_urls.app)
    try:
        checks = await run_checks(owner, app, "llm_app")
    finally:
        await owner.close()
        await app.close()
    return [c.name for c in checks if not c.ok]


async def test_verify_passes_on_the_migrated_database(database_urls: DatabaseUrls) -> None:
    """The baseline: every hole below is measured against a database verify accepts."""
    assert await verify_failures(database_urls) == []


async def test_verify_fails_when_the_app_role_can_set_role_to_the_definer_owner(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """BROKE: llm_app is NOINHERIT, so membership in llm_crosstenant shows in no has_*_privilege.

    verify counts only memberships in superuser/BYPASSRLS roles; with `GRANT llm_crosstenant TO
    llm_app` (and TEMP for llm_crosstenant) the app role can SET ROLE to the owner of every
    definer function, read every tenant through its policies and create TEMP objects.
    """
    database = await owner_pool.fetchval("SELECT current_database()")
    await owner_pool.execute("GRANT llm_crosstenant TO llm_app")
    await owner_pool.execute(f'GRANT TEMPORARY ON DATABASE "{database}" TO llm_crosstenant')
    try:
        app = await asyncpg.connect(database_urls.app)
        try:
            await app.execute("SET ROLE llm_crosstenant")
            tenants_seen = await app.fetchval("SELECT count(*) FROM tenants")
            await app.execute("CREATE TEMP TABLE rt_escaped (x int)")
        finally:
            await app.close()
        assert tenants_seen > 1  # the escape is real: every tenant, no tenant set
        failures = await verify_failures(database_urls)
    finally:
        await owner_pool.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM llm_crosstenant')
        await owner_pool.execute("REVOKE llm_crosstenant FROM llm_app")
    assert failures, "verify passed although llm_app can SET ROLE llm_crosstenant"


async def test_verify_fails_on_a_definer_searching_pg_temp_first_and_last(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool
) -> None:
    """BROKE: `pg_temp, pg_catalog, public, pg_temp` ends in pg_temp, so verify accepts it.

    PostgreSQL searches a schema at its first mention: pg_temp is searched first, and a
    temporary table shadows the function's `investigations`.
    """
    fn = "fn_queue_depth()"
    await owner_pool.execute(
        f"ALTER FUNCTION {fn} SET search_path = pg_temp, pg_catalog, public, pg_temp"
    )
    try:
        async with owner_pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE investigations (status text) ON COMMIT DROP; "
                "INSERT INTO investigations SELECT 'queued' FROM generate_series(1, 777);"
                "GRANT SELECT ON investigations TO llm_crosstenant"
            )
            shadowed = await conn.fetchval(
                "SELECT runs FROM fn_queue_depth() WHERE kind = 'investigation' "
                "AND status = 'queued'"
            )
        assert shadowed == 777  # the temporary table was read by the definer function
        failures = await verify_failures(database_urls)
    finally:
        await owner_pool.execute(
            f"ALTER FUNCTION {fn} SET search_path = pg_catalog, public, pg_temp"
        )
    assert failures, "verify passed a definer function that searches pg_temp first"


async def test_verify_fails_on_a_public_definer_outside_schema_public(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection
) -> None:
    """BROKE: verify looks at functions in `public` only.

    A migration adding a schema the app can use, with a SECURITY DEFINER function executable by
    PUBLIC and no search_path, passes every check.
    """
    await owner_pool.execute(
        "CREATE SCHEMA rt_extra; GRANT USAGE ON SCHEMA rt_extra TO PUBLIC; "
        "CREATE FUNCTION rt_extra.rt_total() RETURNS numeric LANGUAGE sql SECURITY DEFINER "
        "AS 'SELECT coalesce(sum(total_cost_cents), 0) FROM public.llm_monthly_costs'; "
        "GRANT EXECUTE ON FUNCTION rt_extra.rt_total() TO PUBLIC"
    )
    try:
        assert await app_conn.fetchval("SELECT rt_extra.rt_total()") is not None
        failures = await verify_failures(database_urls)
    finally:
        await owner_pool.execute("DROP SCHEMA rt_extra CASCADE")
    assert failures, "verify passed a PUBLIC, unpinned definer function in another schema"


async def test_verify_fails_when_the_app_role_may_run_server_programs(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool
) -> None:
    """BROKE: membership in pg_execute_server_program (or pg_write_server_files, ...) passes.

    verify only asks whether the app role is a member of a superuser or BYPASSRLS role.
    """
    await owner_pool.execute("GRANT pg_execute_server_program TO llm_app")
    try:
        app = await asyncpg.connect(database_urls.app)
        try:
            await app.execute("SET ROLE pg_execute_server_program")
            # Code runs on the server ('cat' reads its input: 'true' may exit first, EPIPE).
            await app.execute("COPY (SELECT 1) TO PROGRAM 'cat >/dev/null'")
        finally:
            await app.close()
        failures = await verify_failures(database_urls)
    finally:
        await owner_pool.execute("REVOKE pg_execute_server_program FROM llm_app")
    assert failures, "verify passed although llm_app may run programs on the server"


async def test_verify_fails_when_the_app_role_has_replication(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool
) -> None:
    """BROKE: REPLICATION streams every tenant's rows past RLS; verify does not look at it."""
    await owner_pool.execute("ALTER ROLE llm_app REPLICATION")
    try:
        failures = await verify_failures(database_urls)
    finally:
        await owner_pool.execute("ALTER ROLE llm_app NOREPLICATION")
    assert failures, "verify passed although llm_app has REPLICATION"


async def test_verify_fails_on_an_unguarded_definer_trigger_naming_tg_relid_in_a_comment(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool
) -> None:
    """BROKE: the TG_RELID guard check is `prosrc LIKE '%TG_RELID%'`: a comment satisfies it."""
    await owner_pool.execute(
        "CREATE FUNCTION public.rt_trigger() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog, public, pg_temp AS "
        "$$ BEGIN -- TG_RELID is checked elsewhere\n RETURN NEW; END $$; "
        "ALTER FUNCTION public.rt_trigger() OWNER TO llm_crosstenant"
    )
    try:
        failures = await verify_failures(database_urls)
    finally:
        await owner_pool.execute("DROP FUNCTION public.rt_trigger()")
    assert failures, "verify passed a definer trigger function with no TG_RELID guard"


async def test_verify_fails_on_an_extra_policy_that_leaks_across_tenants(
    database_urls: DatabaseUrls,
    owner_pool: asyncpg.Pool,
    app_conn: asyncpg.Connection,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    """BROKE: verify checks that tenant_isolation_policy exists, not that nothing else is OR-ed.

    A second permissive policy true whenever *some* tenant is set leaks every tenant to every
    tenant; with no tenant set tables still read empty, so every verify check passes.
    """
    async with tenant_transaction_of(app_conn, other_tenant.tenant_id):
        await app_conn.execute(
            "INSERT INTO investigations (tenant_id, question) VALUES ($1, 'secret')",
            other_tenant.tenant_id,
        )
    await owner_pool.execute(
        "CREATE POLICY rt_leak ON investigations FOR SELECT TO llm_app "
        "USING (current_setting('app.current_tenant_id', true) <> '')"
    )
    try:
        async with tenant_transaction_of(app_conn, tenant.tenant_id):
            leaked = await app_conn.fetchval(
                "SELECT count(*) FROM investigations WHERE tenant_id = $1", other_tenant.tenant_id
            )
        assert leaked > 0
        failures = await verify_failures(database_urls)
    finally:
        await owner_pool.execute("DROP POLICY rt_leak ON investigations")
    assert failures, "verify passed a policy that shows every tenant to every tenant"


async def test_verify_fails_on_each_promised_hole(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool
) -> None:
    """Refused: the holes issue 10 names (a function left to PUBLIC, an unpinned definer, TEMP)."""
    database = await owner_pool.fetchval("SELECT current_database()")
    reopen_and_close = [
        (
            "GRANT EXECUTE ON FUNCTION fn_set_updated_at() TO PUBLIC",
            "REVOKE EXECUTE ON FUNCTION fn_set_updated_at() FROM PUBLIC",
            "no function of ours executable by PUBLIC",
        ),
        (
            "ALTER FUNCTION fn_queue_depth() SET search_path = pg_catalog, public",
            "ALTER FUNCTION fn_queue_depth() SET search_path = pg_catalog, public, pg_temp",
            "every definer function pins search_path, pg_temp last",
        ),
        (
            "ALTER FUNCTION fn_queue_depth() RESET search_path",
            "ALTER FUNCTION fn_queue_depth() SET search_path = pg_catalog, public, pg_temp",
            "every definer function pins search_path, pg_temp last",
        ),
        (
            f'GRANT TEMPORARY ON DATABASE "{database}" TO PUBLIC',
            f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC',
            "application role can create nothing (no TEMP, no CREATE, no large objects)",
        ),
        (
            "GRANT CREATE ON SCHEMA public TO llm_app",
            "REVOKE CREATE ON SCHEMA public FROM llm_app",
            "application role can create nothing (no TEMP, no CREATE, no large objects)",
        ),
        (
            "GRANT UPDATE (heartbeat_at) ON investigations TO llm_app",
            "REVOKE UPDATE (heartbeat_at) ON investigations FROM llm_app",
            "application role can lock no run or ledger row (no UPDATE on their tables)",
        ),
        (
            "GRANT UPDATE ON llm_api_calls TO llm_app",
            "REVOKE UPDATE ON llm_api_calls FROM llm_app",
            "application role can lock no run or ledger row (no UPDATE on their tables)",
        ),
    ]
    for reopen, close, check in reopen_and_close:
        await owner_pool.execute(reopen)
        try:
            failures = await verify_failures(database_urls)
        finally:
            await owner_pool.execute(close)
        assert check in failures, f"verify missed: {reopen}"


async def test_one_multi_row_insert_cannot_pass_the_cap(
    app_conn: asyncpg.Connection, capped_tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """Refused: two 80-cent reservations in one INSERT against a 100-cent cap."""
    tid = capped_tenant.tenant_id
    await set_session_tenant(app_conn, tid)
    await refused(
        app_conn,
        "INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, "
        "reserved_cents, reservation_expires_at) SELECT gen_random_uuid(), $1, g::text, "
        "'explanations', 'm', 'p', 80, now() + interval '1 minute' FROM generate_series(1, 2) g",
        tid,
    )
    assert await committed(owner_pool, tid) == 0


async def test_one_locked_row_cannot_hold_every_tenants_sweep_hostage(
    database_urls: DatabaseUrls,
    app_conn: asyncpg.Connection,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    """BROKE: the sweep is one UPDATE over every tenant's expired rows, without SKIP LOCKED.

    An app session (tenant A) locks A's own expired reservation FOR UPDATE and keeps its
    transaction open: the elected sweeper waits on that row, so tenant B's expired reservation
    stays pending (until statement_timeout fails the whole round, and the next one waits again).
    """
    async with tenant_transaction(app_pool, other_tenant.tenant_id) as conn:
        victim_call = await insert_pending(
            conn, other_tenant.tenant_id, Decimal(1), expires="now() - interval '1 minute'"
        )
    await set_session_tenant(app_conn, tenant.tenant_id)
    hostage = await insert_pending(
        app_conn, tenant.tenant_id, Decimal(1), expires="now() - interval '1 minute'"
    )
    await app_conn.execute("BEGIN")
    # Since migration 012 the lock itself is refused (no UPDATE privilege); the transaction
    # stays open past the refused attempt (a savepoint), and the sweep must not wait on it.
    await app_conn.execute("SAVEPOINT lock_attempt")
    await refused(app_conn, "SELECT 1 FROM llm_api_calls WHERE id = $1 FOR UPDATE", hostage)
    await app_conn.execute("ROLLBACK TO SAVEPOINT lock_attempt")
    sweeper_pid: list[int] = []

    async def sweep() -> None:
        async with app_pool.acquire() as conn:
            sweeper_pid.append(await conn.fetchval("SELECT pg_backend_pid()"))
            await conn.fetchval("SELECT fn_sweep_expired_llm_reservations()")

    task = asyncio.create_task(sweep())
    waiting = False
    observer = await asyncpg.connect(database_urls.app)
    try:
        while not task.done():
            if sweeper_pid:
                waiting = bool(
                    await observer.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)",
                        sweeper_pid[0],
                    )
                )
                if waiting:
                    break
            await asyncio.sleep(0.01)  # polling pg_locks, bounded above
    finally:
        await app_conn.execute("ROLLBACK")
        await task
        await observer.close()
    async with tenant_transaction(app_pool, other_tenant.tenant_id) as conn:
        status = await conn.fetchval("SELECT status FROM llm_api_calls WHERE id = $1", victim_call)
    assert status != "pending"
    assert not waiting, "the sweep of every tenant waited on one tenant's locked row"


async def test_anthropic_cache_token_lies_stay_within_the_reservation(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused: Anthropic usage lying in its cache fields (10^9 cache-creation tokens)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    settings = test_settings.model_copy(
        update={"llm_model": "anthropic/claude-haiku-4-5", "llm_max_attempts": 1}
    )
    gateway = LlmGateway(settings, app_pool, build_price_book(settings))
    body = {
        "id": "msg_rt",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_creation_input_tokens": 1_000_000_000,
            "cache_read_input_tokens": 1_000_000_000,
        },
    }
    with respx.mock:
        respx.post("https://api.anthropic.com/v1/messages").mock(
            return_value=httpx.Response(200, json=body)
        )
        result = await gateway.complete(
            LlmRequest(
                tenant_id=tenant.tenant_id,
                endpoint="explanations",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=50,
            )
        )
    rows = await rows_of(app_pool, tenant.tenant_id)
    assert result.cost_usd * 100 == sum(r["cost_cents"] for r in rows)
    assert_settled_within(await rows_of(app_pool, tenant.tenant_id))


async def test_snapshot_isolation_cannot_pass_a_runs_ceiling(
    database_urls: DatabaseUrls, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """Refused: two REPEATABLE READ sessions each reserve 0.6 of a run's 1-cent ceiling."""
    tid = tenant.tenant_id
    first = await asyncpg.connect(database_urls.app)
    second = await asyncpg.connect(database_urls.app)
    try:
        await set_session_tenant(first, tid)
        run = await first.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents) "
            "VALUES ($1, 'q', 1) RETURNING id",
            tid,
        )
        token = await lease_run(owner_pool, tid, run)
        for conn in (first, second):
            await set_session_tenant(conn, tid)
            await present_session_token(conn, token)
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            await conn.fetchval("SELECT count(*) FROM investigations")
        try:
            await insert_pending(first, tid, Decimal("0.6"), investigation_id=run)
            await first.execute("COMMIT")
        except asyncpg.InvalidTransactionStateError:  # refused outright: safe too
            await first.execute("ROLLBACK")
        try:
            await insert_pending(second, tid, Decimal("0.6"), investigation_id=run)
            await second.execute("COMMIT")
        except asyncpg.PostgresError:
            await second.execute("ROLLBACK")
    finally:
        await first.close()
        await second.close()
    reserved = await owner_pool.fetchval(
        "SELECT coalesce(sum(reserved_cents), 0) FROM llm_api_calls WHERE investigation_id = $1",
        run,
    )
    assert reserved <= 1


async def test_verify_fails_when_the_app_may_insert_a_ledger_rows_month(
    database_urls: DatabaseUrls,
    owner_pool: asyncpg.Pool,
    app_conn: asyncpg.Connection,
    capped_tenant: CreatedTenant,
) -> None:
    """BROKE: verify checks UPDATE of `started_at` (the row's month), never INSERT of it.

    With INSERT (started_at) granted, every reservation can be dated last month: the cap
    trigger sums only this month's spend, so last month's bill grows past the cap without end.
    Nothing in the reserve trigger pins started_at to now() either.
    """
    tid = capped_tenant.tenant_id
    await owner_pool.execute("GRANT INSERT (started_at) ON llm_api_calls TO llm_app")
    try:
        await set_session_tenant(app_conn, tid)
        for _ in range(3):
            call = uuid.uuid4()
            await app_conn.execute(
                "INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, "
                "provider, reserved_cents, reservation_expires_at, started_at, "
                "settle_token_hash) VALUES ($1, $2, $3, 'explanations', 'm', 'p', 80, "
                "now() + interval '1 minute', date_trunc('month', now()) - interval '1 day', "
                "sha256(uuid_send($1::uuid)))",
                call,
                tid,
                str(call),
            )
            settled = await app_conn.fetchval(  # its own call: it holds the settle token
                "SELECT fn_settle_call($1, 'succeeded', NULL, NULL, 80, false, NULL, NULL, "
                "NULL, NULL, NULL, NULL, NULL, $1)",
                call,
            )
            assert settled is True
        last_month = await owner_pool.fetchval(
            "SELECT total_cost_cents FROM llm_monthly_costs WHERE tenant_id = $1", tid
        )
        assert last_month == 240  # the escape is real: 240 cents against a 100-cent cap
        failures = await verify_failures(database_urls)
    finally:
        await owner_pool.execute("REVOKE INSERT (started_at) ON llm_api_calls FROM llm_app")
    assert failures, "verify passed although llm_app may date its reservations last month"


async def test_app_role_cannot_persist_settings_into_every_future_session(
    database_urls: DatabaseUrls, owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection
) -> None:
    """BROKE: `ALTER ROLE CURRENT_USER SET ...` needs no privilege, and it outlives the session.

    The compromised session runs `ALTER ROLE llm_app SET default_transaction_isolation =
    'repeatable read'`: every connection the service opens from then on (every process, after
    restarts) runs its transactions in REPEATABLE READ, where the monthly-cap trigger cannot see
    concurrent reservations (see the snapshot test above), so the service's own concurrent calls
    pass the cap. verify does not look at pg_db_role_setting, and the service does not pin the
    isolation level it relies on.
    """
    await app_conn.execute(
        "ALTER ROLE llm_app SET default_transaction_isolation = 'repeatable read'"
    )
    try:
        pool = await create_pool(database_urls.app, application_name="rt-fresh", max_size=1)
        try:
            async with pool.acquire() as conn, conn.transaction():
                isolation = await conn.fetchval("SELECT current_setting('transaction_isolation')")
        finally:
            await pool.close()
        failures = await verify_failures(database_urls)
    finally:
        await owner_pool.execute("ALTER ROLE llm_app RESET ALL")
    assert isolation == "read committed" or failures, (
        f"a service transaction now runs {isolation!r} and verify passes"
    )
    assert isolation == "read committed", f"the service's transactions run {isolation!r}"
