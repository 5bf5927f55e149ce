"""SQL fragments shared by the migrations: tenant row-level security, grants, updated_at; and
the loader of an earlier migration's module (a later one reuses its SQL text)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

APP_ROLE = "llm_app"
CROSSTENANT_ROLE = "llm_crosstenant"

# Fail closed: with no tenant set (NULL, or '' once a pooled session has reset it) nothing matches.
CURRENT_TENANT = "nullif(current_setting('app.current_tenant_id', true), '')::uuid"

# Every SECURITY DEFINER function searches these, pg_temp last: a temporary object can never
# shadow one of ours (left out, pg_temp would be searched FIRST for tables).
DEFINER_SEARCH_PATH = "pg_catalog, public, pg_temp"


def trigger_table_guard(table: str) -> str:
    """PL/pgSQL refusing to run as a trigger of any table but `table` (for definer triggers)."""
    return f"""IF TG_RELID <> 'public.{table}'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.{table}, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;"""


def tenant_rls(
    table: str, *, column: str = "tenant_id", app_privileges: str = "SELECT, INSERT, UPDATE, DELETE"
) -> str:
    """Enable and force RLS on a tenant table, add the tenant policy, grant the app role."""
    return f"""
    ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
    ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation_policy ON {table}
        USING ({column} = {CURRENT_TENANT})
        WITH CHECK ({column} = {CURRENT_TENANT});
    GRANT {app_privileges} ON {table} TO {APP_ROLE};
    """


def crosstenant_policy(table: str, *, privileges: str = "SELECT") -> str:
    """Let only the cross-tenant definer role (owner of narrow functions) reach every tenant's rows."""
    check = "" if privileges == "SELECT" else " WITH CHECK (true)"
    command = "SELECT" if privileges == "SELECT" else "ALL"
    return f"""
    CREATE POLICY crosstenant_policy ON {table} FOR {command} TO {CROSSTENANT_ROLE}
        USING (true){check};
    GRANT {privileges} ON {table} TO {CROSSTENANT_ROLE};
    """


def updated_at_trigger(table: str) -> str:
    """Keep updated_at current on every UPDATE."""
    return f"""
    CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table}
        FOR EACH ROW EXECUTE FUNCTION fn_set_updated_at();
    """


def earlier_migration(name: str) -> ModuleType:
    """An earlier migration's module by its folder name (e.g. "008_job_kit"), loaded from its
    file: a later migration reuses its SQL text (a downgrade restores it exactly)."""
    path = Path(__file__).resolve().parent / "versions" / name / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_migration_{name[:3]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
