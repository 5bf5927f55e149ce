"""`llm-service verify`: every check passes on a correct database and catches a weakened one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
import pytest
from psycopg import sql

from llm_service.db import migrate
from llm_service.db.urls import DatabaseUrls
from llm_service.verify import EXPECTED_TABLES, render, run_checks


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


@contextmanager
def _throwaway_database(urls: DatabaseUrls) -> Iterator[DatabaseUrls]:
    """A freshly migrated database on the same server, dropped afterwards."""
    name = f"verify_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(urls.owner, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        scratch = DatabaseUrls(
            owner=_with_database(urls.owner, name), app=_with_database(urls.app, name)
        )
        migrate.upgrade(scratch.owner)
        yield scratch
    finally:
        with psycopg.connect(urls.owner, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@asynccontextmanager
async def _connections(
    urls: DatabaseUrls,
) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    owner = await asyncpg.connect(urls.owner)
    try:
        app = await asyncpg.connect(urls.app)
        try:
            yield owner, app
        finally:
            await app.close()
    finally:
        await owner.close()


async def test_every_check_passes_on_the_test_database(database_urls: DatabaseUrls) -> None:
    async with _connections(database_urls) as (owner, app):
        checks = await run_checks(owner, app, "llm_app")
    failed = [(c.name, c.detail) for c in checks if not c.ok]
    assert not failed, render(checks)
    assert len(checks) >= 10
    names = {c.name for c in checks}
    assert "RLS enabled, forced, policy on every tenant table" in names
    text = render(checks)
    assert f"{len(checks)} passed, 0 failed" in text
    assert "FAIL" not in text


async def test_verify_detects_rls_no_longer_forced_on_a_tenant_table(
    database_urls: DatabaseUrls,
) -> None:
    with _throwaway_database(database_urls) as scratch:
        with psycopg.connect(scratch.owner, autocommit=True) as conn:
            conn.execute("ALTER TABLE dead_events NO FORCE ROW LEVEL SECURITY")
        async with _connections(scratch) as (owner, app):
            checks = await run_checks(owner, app, "llm_app")
    failed = {c.name: c.detail for c in checks if not c.ok}
    assert list(failed) == ["RLS enabled, forced, policy on every tenant table"], render(checks)
    assert "dead_events" in failed["RLS enabled, forced, policy on every tenant table"]
    text = render(checks)
    assert f"{len(checks) - 1} passed, 1 failed" in text
    assert "FAIL" in text


async def test_expected_tables_name_every_table_of_the_migrated_schema(
    database_urls: DatabaseUrls,
) -> None:
    # The "schema tables" check only looks for missing tables; its list (and its detail text,
    # "18 + alembic_version expected") must still describe the schema the migrations build.
    with psycopg.connect(database_urls.owner, autocommit=True) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {r[0] for r in rows}
    assert tables - {"alembic_version"} == set(EXPECTED_TABLES), (
        f"llm_service.verify.EXPECTED_TABLES is out of date: not listed "
        f"{sorted(tables - EXPECTED_TABLES - {'alembic_version'})}, "
        f"listed but absent {sorted(EXPECTED_TABLES - tables)}"
    )


# Any UPDATE privilege on a run or ledger table lets llm_app lock its rows (migration 012).
_LOCKABLE = "application role can lock no run or ledger row (no UPDATE on their tables)"


@pytest.mark.parametrize(
    ("hole", "check"),
    [
        (
            "GRANT EXECUTE ON FUNCTION fn_breakdown_add(jsonb, text, numeric, bigint, bigint)"
            " TO PUBLIC",
            "no function of ours executable by PUBLIC",
        ),
        (
            "ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO PUBLIC;"
            " CREATE FUNCTION fn_new_helper() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "no function of ours executable by PUBLIC",
        ),
        (
            "ALTER FUNCTION fn_tenant_for_api_key_hash(text) SET search_path = pg_catalog, public",
            "every definer function pins search_path, pg_temp last",
        ),
        (
            "ALTER FUNCTION fn_queue_depth() RESET search_path",
            "every definer function pins search_path, pg_temp last",
        ),
        (
            "CREATE OR REPLACE FUNCTION fn_llm_api_calls_run_spend() RETURNS trigger"
            " LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp"
            " AS 'BEGIN RETURN NULL; END'",
            "definer trigger functions refuse other tables (TG_RELID)",
        ),
        (
            "DO $$ BEGIN EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO llm_app',"
            " current_database()); END $$",
            "application role can create nothing (no TEMP, no CREATE, no large objects)",
        ),
        (
            "GRANT CREATE ON SCHEMA public TO PUBLIC",
            "application role can create nothing (no TEMP, no CREATE, no large objects)",
        ),
        (
            "GRANT EXECUTE ON FUNCTION pg_catalog.lo_create(oid) TO llm_app",
            "application role can create nothing (no TEMP, no CREATE, no large objects)",
        ),
        (
            "GRANT UPDATE (max_cost_cents) ON investigations TO llm_app",
            ("committed money and limits are read-only to the application role", _LOCKABLE),
        ),
        (
            "GRANT UPDATE ON llm_api_calls TO llm_app",
            ("committed money and limits are read-only to the application role", _LOCKABLE),
        ),
        ("GRANT UPDATE (heartbeat_at) ON budget_optimization_jobs TO llm_app", _LOCKABLE),
        ("GRANT UPDATE (status) ON llm_api_calls TO llm_app", _LOCKABLE),
        (
            "GRANT INSERT ON llm_monthly_costs TO llm_app",
            "committed money and limits are read-only to the application role",
        ),
    ],
)
async def test_verify_detects_a_reopened_privilege_hole(
    database_urls: DatabaseUrls, hole: str, check: str | tuple[str, ...]
) -> None:
    with _throwaway_database(database_urls) as scratch:
        with psycopg.connect(scratch.owner, autocommit=True) as conn:
            conn.execute(hole)
        async with _connections(scratch) as (owner, app):
            checks = await run_checks(owner, app, "llm_app")
    failed = [c.name for c in checks if not c.ok]
    assert failed == ([check] if isinstance(check, str) else list(check)), render(checks)


async def test_a_function_a_later_migration_creates_starts_closed(
    database_urls: DatabaseUrls,
) -> None:
    with _throwaway_database(database_urls) as scratch:
        with psycopg.connect(scratch.owner, autocommit=True) as conn:
            conn.execute("CREATE FUNCTION fn_new_helper() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        async with _connections(scratch) as (owner, app):
            checks = await run_checks(owner, app, "llm_app")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.fetchval("SELECT fn_new_helper()")
    assert all(c.ok for c in checks), render(checks)
