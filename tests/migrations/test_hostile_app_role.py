"""A compromised application-role session tries to widen its privileges; each attack is refused.

Every test connects as `llm_app` (the role the service runs as), never as a superuser, and
asserts both the refusal and that the victim's money did not move.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest

from llm_service.db.pool import presenting_run_token, tenant_transaction
from llm_service.tenants.service import CreatedTenant
from tests.helpers.app_role import lease_run

FORGED_CENTS = Decimal("123456.789")


@pytest.fixture
async def app_conn(app_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A raw app-role connection with no tenant set, as an attacker would hold it."""
    async with app_pool.acquire() as conn:
        yield conn


async def _month_total(owner_pool: asyncpg.Pool, tenant_id: UUID) -> Decimal:
    async with owner_pool.acquire() as conn:
        value: Decimal = await conn.fetchval(
            "SELECT coalesce(sum(total_cost_cents), 0) FROM llm_monthly_costs WHERE tenant_id = $1",
            tenant_id,
        )
    return value


async def _new_run(app_pool: asyncpg.Pool, tenant_id: UUID, max_cost_cents: int = 1) -> UUID:
    async with tenant_transaction(app_pool, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents) "
            "VALUES ($1, 'why?', $2) RETURNING id",
            tenant_id,
            max_cost_cents,
        )
    return run_id


# -- creating objects -------------------------------------------------------------------------


async def test_the_reproduced_temp_table_forgery_is_refused(
    app_conn: asyncpg.Connection, owner_pool: asyncpg.Pool, other_tenant: CreatedTenant
) -> None:
    before = await _month_total(owner_pool, other_tenant.tenant_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute("CREATE TEMP TABLE f (LIKE llm_api_calls INCLUDING DEFAULTS)")
    assert await _month_total(owner_pool, other_tenant.tenant_id) == before


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE public.f (id int)",
        "CREATE SCHEMA attacker",
        "CREATE TEMPORARY SEQUENCE s",
        "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE VIEW public.v AS SELECT 1",
        "CREATE FUNCTION public.fn_tenant_for_api_key_hash(p text, q text) RETURNS uuid "
        "LANGUAGE sql AS 'SELECT NULL::uuid'",
    ],
)
async def test_the_app_role_creates_no_object(app_conn: asyncpg.Connection, statement: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(statement)


async def test_a_definer_trigger_refuses_a_table_other_than_its_own(
    owner_pool: asyncpg.Pool, other_tenant: CreatedTenant
) -> None:
    # Even a role that can create tables (the owner here) cannot point the roll-up at another.
    before = await _month_total(owner_pool, other_tenant.tenant_id)
    async with owner_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("CREATE TEMP TABLE f (LIKE llm_api_calls INCLUDING DEFAULTS)")
            await conn.execute(
                "CREATE TRIGGER t AFTER INSERT ON f FOR EACH ROW "
                "EXECUTE FUNCTION public.fn_llm_api_calls_rollup()"
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="belongs to"):
                await conn.execute(
                    "INSERT INTO f (tenant_id, request_id, endpoint, model, provider, status, "
                    "reserved_cents, reservation_expires_at, cost_cents, settled_at) "
                    "VALUES ($1, 'x', 'explanations', 'm', 'p', 'succeeded', $2, now(), $2, now())",
                    other_tenant.tenant_id,
                    FORGED_CENTS,
                )
        finally:
            await tx.rollback()
    assert await _month_total(owner_pool, other_tenant.tenant_id) == before


async def test_large_objects_cannot_be_created(app_conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.fetchval("SELECT lo_create(0)")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.fetchval("SELECT lo_from_bytea(0, 'x'::bytea)")


# -- internal functions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        "SELECT fn_breakdown_add('{}'::jsonb, 'm', 1, 1, 1)",
        "SELECT fn_llm_api_calls_rollup()",
        "SELECT fn_llm_api_calls_reserve()",
        "SELECT fn_journal_attribution_events()",
        "SELECT fn_set_updated_at()",
    ],
)
async def test_internal_functions_are_not_executable(
    app_conn: asyncpg.Connection, call: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(call)


async def test_no_function_of_ours_is_left_to_public(app_conn: asyncpg.Connection) -> None:
    rows = await app_conn.fetch(
        """
        SELECT p.oid::regprocedure::text AS f FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                           AND d.objid = p.oid AND d.deptype = 'e')
           AND has_function_privilege('public', p.oid, 'EXECUTE')
        """
    )
    assert [r["f"] for r in rows] == []


async def test_the_app_role_cannot_become_another_role(app_conn: asyncpg.Connection) -> None:
    for statement in (
        "SET ROLE llm_crosstenant",
        "SET SESSION AUTHORIZATION llm_crosstenant",
        "SELECT set_config('role', 'llm_crosstenant', false)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.execute(statement)
    assert await app_conn.fetchval("SELECT current_user") == "llm_app"


async def test_sequences_cannot_be_rewound(app_conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.fetchval("SELECT setval('investigation_events_seq_seq', 1)")


# -- money the service committed ----------------------------------------------------------------


async def test_a_runs_limits_and_spend_cannot_be_rewritten(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id = await _new_run(app_pool, tenant.tenant_id)
    for assignment in (
        "max_cost_cents = 30",
        "cost_cents = 0",
        "timeout_ms = 60000",
        "max_steps = 50",
        "tenant_id = tenant_id",
    ):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"UPDATE investigations SET {assignment} WHERE id = $1", run_id)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT max_cost_cents, cost_cents FROM investigations WHERE id = $1", run_id
        )
    assert (row["max_cost_cents"], row["cost_cents"]) == (1, 0)


async def test_a_run_cannot_be_created_with_spend_already_recorded(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO investigations (tenant_id, question, status, cost_cents) "
                "VALUES ($1, 'q', 'succeeded', 0)",
                tenant.tenant_id,
            )


# The secret this module's rows are reserved with (migration 012: their settle presents it).
SETTLE_TOKEN = uuid.uuid4()


async def _reserve_row(
    conn: asyncpg.Connection, tenant_id: UUID, reserved: Decimal, run_id: UUID | None = None
) -> UUID:
    call_id: UUID = await conn.fetchval(
        "INSERT INTO llm_api_calls (tenant_id, request_id, endpoint, model, provider, "
        "reserved_cents, reservation_expires_at, investigation_id, settle_token_hash) "
        "VALUES ($1, $2, 'investigations', 'm', 'p', $3, now() + interval '1 minute', $4, "
        "sha256(uuid_send($5::uuid))) RETURNING id",
        tenant_id,
        uuid.uuid4().hex,
        reserved,
        run_id,
        SETTLE_TOKEN,
    )
    return call_id


async def test_a_ledger_row_is_born_pending(app_pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO llm_api_calls (tenant_id, request_id, endpoint, model, provider, "
                "status, reserved_cents, reservation_expires_at, cost_cents, settled_at) "
                "VALUES ($1, 'x', 'explanations', 'm', 'p', 'succeeded', 1, now(), 1, now())",
                tenant.tenant_id,
            )


# The application's settle of a ledger row (migration 012): $1 the call, $2 status, $3 cost;
# presenting the settle token the rows were reserved with (the reserving request's secret).
_SETTLE = (
    "SELECT fn_settle_call($1, $2, NULL, NULL, $3, false, NULL, NULL, NULL, NULL, NULL, NULL, "
    f"NULL, '{SETTLE_TOKEN}')"
)


async def test_a_settlement_cannot_exceed_its_reservation(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        call_id = await _reserve_row(conn, tenant.tenant_id, Decimal("0.5"))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # 012: no UPDATE of a ledger row
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "UPDATE llm_api_calls SET status = 'succeeded', cost_cents = $2, "
                "settled_at = now() WHERE id = $1",
                call_id,
                FORGED_CENTS,
            )
    with pytest.raises(asyncpg.CheckViolationError, match="within_reservation"):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await conn.fetchval(_SETTLE, call_id, "succeeded", FORGED_CENTS)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "UPDATE llm_api_calls SET reserved_cents = $2 WHERE id = $1", call_id, FORGED_CENTS
            )
    assert await _month_total(owner_pool, tenant.tenant_id) == 0


async def test_a_settled_row_cannot_be_rewritten(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        call_id = await _reserve_row(conn, tenant.tenant_id, Decimal("0.5"))
        assert await conn.fetchval(_SETTLE, call_id, "succeeded", Decimal("0.25")) is True
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:  # settled once only
        assert await conn.fetchval(_SETTLE, call_id, "failed", Decimal(0)) is False
    for assignment in ("cost_cents = 0", "status = 'failed'", "usage_anomaly = 'x'"):
        # llm_app may not UPDATE the row at all (migration 012); the trigger keeps it final
        # for every role, the owner's definers included.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
                await conn.execute(f"UPDATE llm_api_calls SET {assignment} WHERE id = $1", call_id)
        with pytest.raises(asyncpg.CheckViolationError, match="immutable"):
            await owner_pool.execute(
                f"UPDATE llm_api_calls SET {assignment} WHERE id = $1", call_id
            )
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM llm_api_calls WHERE id = $1", call_id)


async def test_the_monthly_cap_is_enforced_by_the_database(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    # A session that skips the service's own cap check still cannot reserve past the cap.
    async with owner_pool.acquire() as conn:
        await conn.execute(
            "UPDATE tenants SET monthly_cap_cents = 1 WHERE id = $1", tenant.tenant_id
        )
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        await _reserve_row(conn, tenant.tenant_id, Decimal("0.6"))
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(asyncpg.PostgresError, match="monthly cap") as refused:
            await _reserve_row(conn, tenant.tenant_id, Decimal("0.6"))
    assert refused.value.sqlstate == "LLCAP"


async def test_a_reservation_past_a_runs_ceiling_is_refused_by_the_database(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    run_id = await _new_run(app_pool, tenant.tenant_id, max_cost_cents=1)
    token = await lease_run(owner_pool, tenant.tenant_id, run_id)  # its writes need the token
    with presenting_run_token(token):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await _reserve_row(conn, tenant.tenant_id, Decimal("0.75"), run_id)
        with pytest.raises(asyncpg.CheckViolationError, match="within_ceiling"):
            async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
                await _reserve_row(conn, tenant.tenant_id, Decimal("0.5"), run_id)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        assert await conn.fetchval(
            "SELECT cost_cents FROM investigations WHERE id = $1", run_id
        ) == Decimal("0.75")


async def test_a_ledger_row_naming_another_tenants_run_moves_nothing(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    victim_run = await _new_run(app_pool, other_tenant.tenant_id, max_cost_cents=30)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # migration 010: not its run
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await _reserve_row(conn, tenant.tenant_id, Decimal("0.5"), victim_run)
    async with tenant_transaction(app_pool, other_tenant.tenant_id) as conn:
        cost = await conn.fetchval(
            "SELECT cost_cents FROM investigations WHERE id = $1", victim_run
        )
    assert cost == 0


async def test_a_row_cannot_be_written_for_another_tenant(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await _reserve_row(conn, other_tenant.tenant_id, Decimal("0.5"))
    assert await _month_total(owner_pool, other_tenant.tenant_id) == 0


async def test_the_monthly_costs_cannot_be_written(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    for statement in (
        "INSERT INTO llm_monthly_costs (tenant_id, month) VALUES ($1, date '2026-12-01')",
        "UPDATE llm_monthly_costs SET total_cost_cents = 0 WHERE tenant_id = $1",
        "DELETE FROM llm_monthly_costs WHERE tenant_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
                await conn.execute(statement, tenant.tenant_id)


# -- definer functions with crafted arguments ---------------------------------------------------


async def test_the_key_lookup_reveals_nothing_for_crafted_hashes(
    app_conn: asyncpg.Connection,
) -> None:
    for crafted in (None, "", "%", "' OR 1=1 --", "x" * 10_000):
        assert await app_conn.fetchval("SELECT fn_tenant_for_api_key_hash($1)", crafted) is None


async def test_definer_functions_resolve_nothing_from_the_session_search_path(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    # A session search_path naming a schema first changes nothing: definers pin their own.
    await app_conn.execute("SET search_path = pg_temp, public")
    try:
        rows = await app_conn.fetch("SELECT * FROM fn_reconcile_monthly_costs(NULL)")
        assert all(r["recorded_cost_cents"] == r["computed_cost_cents"] for r in rows)
    finally:
        await app_conn.execute("RESET search_path")
