"""`llm-service verify`: the deployment report's checks, made true, plus the security model's."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from llm_service.db import migrate
from llm_service.verify_privileges import privilege_checks

EXPECTED_TABLES = frozenset(
    {
        "tenants", "channel_taxonomy", "attribution_events", "attribution_allocations",
        "revenue_ledger", "revenue_state_transitions", "dead_events", "reconciliation_runs",
        "channel_state_transitions", "channel_assignment_corrections", "pii_audit_findings",
        "llm_api_calls", "llm_monthly_costs", "investigations", "investigation_tool_calls",
        "explanation_cache", "budget_optimization_jobs", "llm_validation_failures",
        "investigation_events", "data_change_journal", "pii_scan_queue",
    }
)  # fmt: skip
GLOBAL_TABLES = frozenset({"channel_taxonomy", "channel_state_transitions", "alembic_version"})


@dataclass(frozen=True)
class Check:
    """One verified fact: its name, whether it holds, and what was seen."""

    name: str
    ok: bool
    detail: str


TENANT_TABLES_SQL = """
SELECT c.relname AS table_name, c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced,
       EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid
               AND p.polname = 'tenant_isolation_policy'
               AND p.polqual IS NOT NULL AND p.polwithcheck IS NOT NULL
               AND p.polroles = '{0}'::oid[]) AS has_policy
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
  AND (c.relname = 'tenants' OR EXISTS (
        SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
        AND NOT a.attisdropped))
ORDER BY 1
"""


async def tenant_tables(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every table holding a tenant's rows, discovered from the catalog, with its RLS state."""
    return list(await conn.fetch(TENANT_TABLES_SQL))


async def run_checks(
    owner: asyncpg.Connection, app: asyncpg.Connection, app_role: str
) -> list[Check]:
    """Run every check; `owner` and `app` are connections as the owner and the application role."""
    checks: list[Check] = []
    tables = {
        r["tablename"]
        for r in await owner.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    missing = EXPECTED_TABLES - tables
    checks.append(
        Check(
            "schema tables",
            not missing and "alembic_version" in tables,
            f"{len(tables)} tables in public ({len(EXPECTED_TABLES)} + alembic_version expected)"
            + (f"; missing: {sorted(missing)}" if missing else ""),
        )
    )

    heads = migrate.heads()
    versions = [
        r["version_num"] for r in await owner.fetch("SELECT version_num FROM alembic_version")
    ]
    checks.append(Check("single migration head", len(heads) == 1, f"heads: {heads}"))
    checks.append(Check("database at head", versions == heads, f"database: {versions}"))

    rls = await tenant_tables(owner)
    weak = [r["table_name"] for r in rls if not (r["enabled"] and r["forced"] and r["has_policy"])]
    checks.append(
        Check(
            "RLS enabled, forced, policy on every tenant table",
            not weak and len(rls) > 0,
            f"{len(rls) - len(weak)}/{len(rls)} tenant tables protected"
            + (f"; weak: {weak}" if weak else ""),
        )
    )

    role = await owner.fetchrow(
        "SELECT rolsuper, rolbypassrls, rolcanlogin, rolcreaterole, rolcreatedb FROM pg_roles "
        "WHERE rolname = $1",
        app_role,
    )
    role_ok = (
        role is not None
        and role["rolcanlogin"]
        and not any(role[k] for k in ("rolsuper", "rolbypassrls", "rolcreaterole", "rolcreatedb"))
    )
    checks.append(
        Check(
            "application role can bypass nothing",
            bool(role_ok),
            f"{app_role}: " + (str(dict(role)) if role else "missing"),
        )
    )

    owned = await owner.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = $1",
        app_role,
    )
    checks.append(Check("application role owns no table", owned == 0, f"owns {owned} relations"))

    powerful = await owner.fetchval(
        "SELECT count(*) FROM pg_roles r "
        "WHERE pg_has_role($1, r.oid, 'MEMBER') AND r.rolname <> $1 "
        "AND (r.rolsuper OR r.rolbypassrls)",
        app_role,
    )
    checks.append(
        Check(
            "application role inherits no bypass",
            powerful == 0,
            f"member of {powerful} superuser/bypass roles",
        )
    )

    current = await app.fetchval("SELECT current_user")
    leaks = []
    for r in rls:
        count = await app.fetchval(f'SELECT count(*) FROM "{r["table_name"]}"')
        if count:
            leaks.append(f"{r['table_name']}={count}")
    checks.append(
        Check(
            "no tenant set: every tenant table reads empty",
            not leaks and current == app_role,
            f"as {current}: " + (", ".join(leaks) if leaks else "0 rows everywhere"),
        )
    )

    seed = await owner.fetchval("SELECT family FROM channel_taxonomy WHERE code = 'facebook_paid'")
    channels = await owner.fetchval("SELECT count(*) FROM channel_taxonomy")
    checks.append(
        Check(
            "taxonomy seed",
            seed == "paid_social",
            f"facebook_paid -> {seed}; {channels} channel codes",
        )
    )

    vector = await owner.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    checks.append(Check("pgvector installed", vector is not None, f"vector {vector}"))

    definers = await owner.fetch(
        "SELECT p.proname, pg_get_userbyid(p.proowner) AS owner, r.rolsuper, r.rolbypassrls "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "JOIN pg_roles r ON r.oid = p.proowner "
        "WHERE n.nspname = 'public' AND p.prosecdef"
    )
    loose = [d["proname"] for d in definers if d["rolsuper"] or d["rolbypassrls"]]
    checks.append(
        Check(
            "definer functions run without superuser or bypass",
            not loose and bool(definers),
            f"{len(definers)} SECURITY DEFINER functions" + (f"; loose: {loose}" if loose else ""),
        )
    )
    await privilege_checks(owner, app_role, lambda *c: checks.append(Check(*c)))
    return checks


def render(checks: list[Check]) -> str:
    """A readable table of the checks."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{c.name:<{width}}  {'PASS' if c.ok else 'FAIL':<6}  {c.detail}" for c in checks]
    failed = sum(not c.ok for c in checks)
    lines.append(f"\n{len(checks) - failed} passed, {failed} failed")
    return "\n".join(lines)
