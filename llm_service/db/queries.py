"""The database plumbing's named statements: tenant and time limits, migrations, server set-up."""

from __future__ import annotations

from uuid import UUID

import asyncpg
from psycopg import sql

# The setting a transaction writing for a claimed run presents its lease token in (migration
# 010's guards read it; the migration spells it too, as migrations stay frozen).
RUN_TOKEN_SETTING = "llm.run_token"


def _present_run_token_sql(token_param: str) -> str:
    """SQL that sets the run's lease token `token_param` for the current transaction."""
    return f"set_config('{RUN_TOKEN_SETTING}', {token_param}, true)"


# No token, for the current transaction: a token a session set for itself (set_config(...,
# false)) on a pooled connection is never presented by a later transaction on it.
_NO_RUN_TOKEN = _present_run_token_sql("''")
_SET_TENANT_ONLY = "SELECT set_config('app.current_tenant_id', $1, true)"
# The one statement that sets the tenant: for the current transaction only, never the session.
SET_TENANT = _SET_TENANT_ONLY + ", " + _NO_RUN_TOKEN
# The same, for a transaction writing for a claimed run: with the lease token its claim returned
# (migration 010: the database refuses a run's writes without it).
SET_TENANT_AND_RUN_TOKEN = _SET_TENANT_ONLY + ", " + _present_run_token_sql("$2")
# The tenant of an API key's hash, set for the current transaction in the same statement that
# resolves it: the database, not the request, decides whose rows the transaction sees. An
# unknown (or revoked) key sets '' (no tenant: every tenant table reads empty, fail closed)
# and the statement returns ''.


def tenant_setting_sql(value_sql: str) -> str:
    """An SQL expression that sets the tenant to the text `value_sql` for the current
    transaction (a single statement's, outside a block) and yields it."""
    return f"set_config('app.current_tenant_id', {value_sql}, true)"


def run_token_setting_sql(value_sql: str) -> str:
    """An SQL expression that presents the lease token `value_sql` (text; NULL presents none)
    for the current transaction, as PRESENT_RUN_TOKEN does (migration 010)."""
    return f"set_config('llm.run_token', coalesce({value_sql}, ''), true)"


def tenant_from_key_sql(key_param: str) -> str:
    """SQL that sets (for the transaction) and yields the tenant of the key hash `key_param`."""
    return tenant_setting_sql(f"coalesce(fn_tenant_for_api_key_hash({key_param})::text, '')")


SET_TENANT_FROM_KEY = "SELECT " + tenant_from_key_sql("$1") + ", " + _NO_RUN_TOKEN
CURRENT_TENANT = "SELECT current_setting('app.current_tenant_id', true)"
SET_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"

ALEMBIC_TABLE_EXISTS = "SELECT to_regclass('public.alembic_version') IS NOT NULL"
ALEMBIC_REVISIONS = "SELECT version_num FROM alembic_version"

DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = '{name}';"
CREATE_DATABASE = "CREATE DATABASE {name};"

# Client backends of other processes on a database: what `db-stop` refuses to cut off.
OTHER_CLIENTS = """
SELECT pid, coalesce(nullif(application_name, ''), '?') AS application_name, state
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
 ORDER BY pid
"""


def alter_role_password(role: str, password: str) -> sql.Composed:
    """ALTER ROLE … PASSWORD …, quoted by psycopg."""
    return sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))


PRESENT_RUN_TOKEN = "SELECT " + _present_run_token_sql("$1")


async def present_run_token(conn: asyncpg.Connection, run_token: UUID) -> None:
    """Present a claim's lease token for the rest of the current transaction (migration 010)."""
    await conn.execute(PRESENT_RUN_TOKEN, str(run_token))


async def set_tenant(
    conn: asyncpg.Connection, tenant_id: UUID | str, run_token: UUID | None = None
) -> None:
    """Set the tenant (and the run's lease token, if any) for the current transaction only."""
    if run_token is None:
        await conn.execute(SET_TENANT, str(tenant_id))
    else:
        await conn.execute(SET_TENANT_AND_RUN_TOKEN, str(tenant_id), str(run_token))


async def set_tenant_from_key(conn: asyncpg.Connection, api_key_hash: str) -> str:
    """Set the tenant of this API key hash for the current transaction; '' when none has it."""
    tenant: str = await conn.fetchval(SET_TENANT_FROM_KEY, api_key_hash)
    return tenant


async def current_tenant(conn: asyncpg.Connection) -> str | None:
    """The transaction's tenant setting as text (None or '' when unset)."""
    value: str | None = await conn.fetchval(CURRENT_TENANT)
    return value


async def set_statement_timeout(conn: asyncpg.Connection, milliseconds: int) -> None:
    """Limit each statement of the current transaction to `milliseconds` (0 = no limit)."""
    await conn.execute(SET_STATEMENT_TIMEOUT, str(milliseconds))
