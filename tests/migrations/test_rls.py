"""Row-level security, proven as the application role (never a superuser) on every tenant table."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import pytest
from tenant_rows import (
    PUBLIC_TABLES_SQL,
    ROW_BUILDERS,
    discover_tenant_tables,
    insert_dead_event,
    insert_event,
    insert_investigation,
    seed_every_tenant_table,
    tenant_column,
)

from llm_service.db.pool import create_pool, tenant_transaction, transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.tenants.service import CreatedTenant, create_tenant
from llm_service.verify import tenant_tables

RLS_VIOLATION = "new row violates row-level security policy"


@dataclass(frozen=True)
class Seeded:
    """Two tenants with rows in every tenant table."""

    a: UUID
    b: UUID
    tables: list[str]


@pytest.fixture(scope="module")
async def seeded(owner_pool: asyncpg.Pool) -> Seeded:
    """As the owner, rows for tenant A and tenant B in every discovered tenant table."""
    a = (await create_tenant(owner_pool, f"rls-a-{uuid.uuid4().hex[:8]}")).tenant_id
    b = (await create_tenant(owner_pool, f"rls-b-{uuid.uuid4().hex[:8]}")).tenant_id
    async with owner_pool.acquire() as conn:
        tables = await discover_tenant_tables(conn)
    await seed_every_tenant_table(owner_pool, tables, [a, b])
    return Seeded(a=a, b=b, tables=tables)


# --------------------------------------------------------------------------------------------
# The catalog
# --------------------------------------------------------------------------------------------


async def test_tenant_table_discovery_finds_a_non_trivial_set(app_pool: asyncpg.Pool) -> None:
    async with app_pool.acquire() as conn:
        tables = await discover_tenant_tables(conn)
        verify_tables = [r["table_name"] for r in await tenant_tables(conn)]
    assert len(tables) >= 15, tables
    assert tables == verify_tables, "verify.tenant_tables() and the test's discovery disagree"
    for expected in ("attribution_events", "pii_audit_findings", "llm_validation_failures"):
        assert expected in tables


async def test_every_tenant_table_has_rls_enabled_forced_and_the_tenant_policy(
    app_pool: asyncpg.Pool,
) -> None:
    async with app_pool.acquire() as conn:
        tables = await discover_tenant_tables(conn)
        rows = await conn.fetch(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, p.polcmd::text AS cmd,
                   p.polpermissive, p.polroles = '{0}'::oid[] AS to_public,
                   pg_get_expr(p.polqual, p.polrelid) AS using_expr,
                   pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_policy p ON p.polrelid = c.oid AND p.polname = 'tenant_isolation_policy'
            WHERE n.nspname = 'public' AND c.relname = ANY($1::text[])
            """,
            tables,
        )
        # The canonical expression, rendered by this server, to compare the policies with.
        expected = {
            column: await conn.fetchval(
                "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy "
                "WHERE polrelid = $1::regclass AND polname = 'tenant_isolation_policy'",
                table,
            )
            for column, table in (("tenant_id", "attribution_events"), ("id", "tenants"))
        }
    assert {r["relname"] for r in rows} == set(tables)
    problems = []
    for r in rows:
        name = r["relname"]
        if not r["relrowsecurity"]:
            problems.append(f"{name}: RLS not enabled")
        if not r["relforcerowsecurity"]:
            problems.append(f"{name}: RLS not forced")
        if r["cmd"] is None:
            problems.append(f"{name}: no tenant_isolation_policy")
            continue
        if r["using_expr"] is None or r["check_expr"] is None:
            problems.append(f"{name}: policy lacks USING or WITH CHECK")
        if r["cmd"] != "*" or not r["polpermissive"] or not r["to_public"]:
            problems.append(f"{name}: policy is not a permissive FOR ALL TO public policy")
        want = expected[tenant_column(name)]
        if r["using_expr"] != want or r["check_expr"] != want:
            problems.append(f"{name}: policy is {r['using_expr']} / {r['check_expr']}")
    assert not problems, problems
    # Fail closed: NULL or '' as the tenant matches nothing.
    normalised = expected["tenant_id"].lower().replace("::text", "")
    assert "nullif(current_setting('app.current_tenant_id', true), '')" in normalised
    assert normalised.endswith("::uuid)")


async def test_no_other_policy_opens_a_tenant_table_to_the_application_role(
    app_pool: asyncpg.Pool,
) -> None:
    async with app_pool.acquire() as conn:
        others = await conn.fetch(
            """
            SELECT c.relname, p.polname,
                   ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END
                         FROM unnest(p.polroles) r) AS roles
            FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
            WHERE p.polname <> 'tenant_isolation_policy'
            """
        )
    loose = [
        (r["relname"], r["polname"], r["roles"])
        for r in others
        if r["roles"] != ["llm_crosstenant"]
    ]
    assert not loose, (
        f"policies besides tenant_isolation_policy must be for llm_crosstenant: {loose}"
    )


async def test_tables_without_tenant_id_are_exactly_the_global_ones(app_pool: asyncpg.Pool) -> None:
    async with app_pool.acquire() as conn:
        public = {r["relname"] for r in await conn.fetch(PUBLIC_TABLES_SQL)}
        tenant = set(await discover_tenant_tables(conn))
        tenants_rls = await conn.fetchrow(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE oid = 'public.tenants'::regclass"
        )
    without_tenant_id = public - (tenant - {"tenants"})
    assert without_tenant_id == {
        "channel_taxonomy",
        "channel_state_transitions",
        "alembic_version",
        "tenants",
    }
    assert tenants_rls is not None and tuple(tenants_rls) == (True, True)


# --------------------------------------------------------------------------------------------
# The application role
# --------------------------------------------------------------------------------------------


async def test_app_role_is_not_superuser_cannot_bypass_rls_owns_nothing(
    app_pool: asyncpg.Pool,
) -> None:
    async with app_pool.acquire() as conn:
        role = await conn.fetchrow(
            "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        owned = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relowner = "
            "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
        )
        owned_functions = await conn.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proowner = "
            "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
        )
        powerful = await conn.fetch(
            "SELECT rolname FROM pg_roles r WHERE r.rolname <> current_user "
            "AND pg_has_role(current_user, r.oid, 'MEMBER') "
            "AND (r.rolsuper OR r.rolbypassrls OR r.rolname = 'llm_crosstenant' OR EXISTS ("
            "  SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "  WHERE n.nspname = 'public' AND c.relowner = r.oid))"
        )
    assert role is not None
    assert role["rolname"] == "llm_app"
    assert role["rolsuper"] is False
    assert role["rolbypassrls"] is False
    assert [r["relname"] for r in owned] == []
    assert owned_functions == 0
    assert [r["rolname"] for r in powerful] == [], (
        "the application role is a member of a superuser/bypass/owner/definer role"
    )


# --------------------------------------------------------------------------------------------
# Isolation of every tenant table
# --------------------------------------------------------------------------------------------


async def test_every_discovered_tenant_table_has_a_row_builder(app_pool: asyncpg.Pool) -> None:
    async with app_pool.acquire() as conn:
        tables = await discover_tenant_tables(conn)
    missing = [t for t in tables if t not in ROW_BUILDERS]
    assert not missing, "; ".join(f"add a row builder for table {t}" for t in missing)


async def test_app_role_sees_only_the_current_tenants_rows_in_every_tenant_table(
    seeded: Seeded, app_pool: asyncpg.Pool
) -> None:
    problems = []
    for me, other in ((seeded.a, seeded.b), (seeded.b, seeded.a)):
        async with tenant_transaction(app_pool, me, readonly=True) as conn:
            for table in seeded.tables:
                col = tenant_column(table)
                mine, others, foreign = await conn.fetchrow(
                    f"SELECT count(*) FILTER (WHERE {col} = $1), "
                    f"count(*) FILTER (WHERE {col} IS DISTINCT FROM $1), "
                    f"count(*) FILTER (WHERE {col} = $2) FROM {table}",
                    me,
                    other,
                )
                if mine == 0:
                    problems.append(f"{table}: tenant {me} does not see its own rows")
                if others or foreign:
                    problems.append(f"{table}: tenant {me} sees {others} rows of other tenants")
    assert not problems, problems


async def test_no_tenant_set_every_tenant_table_reads_empty(
    seeded: Seeded, app_pool: asyncpg.Pool
) -> None:
    async with transaction(app_pool) as conn:
        assert await conn.fetchval("SELECT current_user") == "llm_app"
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in seeded.tables}
    assert {t: n for t, n in counts.items() if n} == {}
    # An empty tenant (what a pooled session holds after a transaction) fails closed too.
    async with app_pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('app.current_tenant_id', '', true)")
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in seeded.tables}
    assert {t: n for t, n in counts.items() if n} == {}


@pytest.mark.parametrize(
    "table, insert",
    [
        (
            "attribution_events",
            "INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type,"
            " channel, idempotency_key)"
            " VALUES ($1, now(), now(), 'click', 'email', gen_random_uuid()::text)",
        ),
        (
            "dead_events",
            "INSERT INTO dead_events (tenant_id, source, error_type, error_message)"
            " VALUES ($1, 's', 'E', 'm')",
        ),
        ("reconciliation_runs", "INSERT INTO reconciliation_runs (tenant_id) VALUES ($1)"),
        ("investigations", "INSERT INTO investigations (tenant_id, question) VALUES ($1, 'q?')"),
        (
            "llm_validation_failures",
            "INSERT INTO llm_validation_failures (tenant_id, endpoint, validation_error)"
            " VALUES ($1, 'explanations', 'bad')",
        ),
        (
            "pii_audit_findings",
            "INSERT INTO pii_audit_findings (tenant_id, source, detected_key)"
            " VALUES ($1, 'llm_guard', 'email')",
        ),
    ],
)
async def test_writing_a_row_for_another_tenant_is_refused(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    table: str,
    insert: str,
) -> None:
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match=RLS_VIOLATION):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await conn.execute(insert, other_tenant.tenant_id)
    # The same statement for the tenant that is set works.
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        await conn.execute(insert, tenant.tenant_id)


async def test_no_tenant_set_writing_any_row_is_refused(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match=RLS_VIOLATION):
        async with transaction(app_pool) as conn:
            await conn.execute(
                "INSERT INTO dead_events (tenant_id, source, error_type, error_message)"
                " VALUES ($1, 's', 'E', 'm')",
                tenant.tenant_id,
            )


@pytest.mark.parametrize("table", ["dead_events", "reconciliation_runs", "investigations"])
async def test_moving_a_row_to_another_tenant_is_refused(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant, table: str
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        if table == "dead_events":
            row_id = await insert_dead_event(conn, tenant.tenant_id)
        elif table == "investigations":
            row_id = await insert_investigation(conn, tenant.tenant_id)
        else:
            row_id = await conn.fetchval(
                "INSERT INTO reconciliation_runs (tenant_id) VALUES ($1) RETURNING id",
                tenant.tenant_id,
            )
    # Refused by RLS, or before it: investigations' tenant_id is not writable at all.
    refusal = "permission denied" if table == "investigations" else RLS_VIOLATION
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match=refusal):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await conn.execute(
                f"UPDATE {table} SET tenant_id = $1 WHERE id = $2", other_tenant.tenant_id, row_id
            )
    async with tenant_transaction(app_pool, tenant.tenant_id, readonly=True) as conn:
        assert await conn.fetchval(f"SELECT tenant_id FROM {table} WHERE id = $1", row_id) == (
            tenant.tenant_id
        )


async def test_other_tenants_rows_cannot_be_updated_or_deleted(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    async with tenant_transaction(app_pool, other_tenant.tenant_id) as conn:
        row_id = await insert_dead_event(conn, other_tenant.tenant_id)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        assert (
            await conn.execute(
                "UPDATE dead_events SET remediation_notes = 'x' WHERE id = $1", row_id
            )
            == "UPDATE 0"
        )
        assert await conn.execute("DELETE FROM dead_events WHERE id = $1", row_id) == "DELETE 0"
    async with tenant_transaction(app_pool, other_tenant.tenant_id, readonly=True) as conn:
        row = await conn.fetchrow("SELECT remediation_notes FROM dead_events WHERE id = $1", row_id)
    assert row is not None and row["remediation_notes"] is None


# --------------------------------------------------------------------------------------------
# Pooled connections
# --------------------------------------------------------------------------------------------


@pytest.fixture
async def single_connection_pool(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(
        database_urls.app, application_name="tests-rls-single", min_size=1, max_size=1
    )
    yield pool
    await pool.close()


async def test_one_pooled_connection_serving_a_then_b_then_a_never_leaks_a_tenant(
    single_connection_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    a, b = tenant.tenant_id, other_tenant.tenant_id
    for t in (a, b):
        async with tenant_transaction(app_pool, t) as conn:
            await insert_dead_event(conn, t)
    backend_pids = set()
    for current in (a, b, a):
        async with tenant_transaction(single_connection_pool, current) as conn:
            backend_pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
            assert await conn.fetchval(
                "SELECT current_setting('app.current_tenant_id', true)"
            ) == str(current)
            seen = {r["tenant_id"] for r in await conn.fetch("SELECT tenant_id FROM dead_events")}
            assert seen == {current}
            assert [r["id"] for r in await conn.fetch("SELECT id FROM tenants")] == [current]
        async with single_connection_pool.acquire() as conn:
            # Outside a transaction the connection carries no tenant.
            assert await conn.fetchval("SELECT current_setting('app.current_tenant_id', true)") in (
                None,
                "",
            )
            assert await conn.fetchval("SELECT count(*) FROM dead_events") == 0
    assert len(backend_pids) == 1, "the pool of one should have reused one connection"


async def test_a_failed_tenant_transaction_leaves_no_tenant_behind(
    single_connection_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
        async with tenant_transaction(single_connection_pool, tenant.tenant_id) as conn:
            await conn.fetchval("SELECT 1 / 0")
    async with single_connection_pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_setting('app.current_tenant_id', true)") in (
            None,
            "",
        )
        assert await conn.fetchval("SELECT count(*) FROM tenants") == 0


# --------------------------------------------------------------------------------------------
# Idempotency keys are unique per tenant
# --------------------------------------------------------------------------------------------


async def test_event_idempotency_key_is_unique_per_tenant_not_globally(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    key = f"webhook-{uuid.uuid4().hex}"
    for t in (tenant.tenant_id, other_tenant.tenant_id):
        async with tenant_transaction(app_pool, t) as conn:
            await insert_event(conn, t, idempotency_key=key)
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await insert_event(conn, tenant.tenant_id, idempotency_key=key)


async def test_investigation_idempotency_key_is_unique_per_tenant_not_globally(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    key = f"inv-{uuid.uuid4().hex}"
    for t in (tenant.tenant_id, other_tenant.tenant_id):
        async with tenant_transaction(app_pool, t) as conn:
            await insert_investigation(conn, t, idempotency_key=key)
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        async with tenant_transaction(app_pool, other_tenant.tenant_id) as conn:
            await insert_investigation(conn, other_tenant.tenant_id, idempotency_key=key)
    # Runs without a key are not de-duplicated.
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        await insert_investigation(conn, tenant.tenant_id)
        await insert_investigation(conn, tenant.tenant_id)
