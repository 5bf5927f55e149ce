"""`llm-service verify`: the deployment report's checks, made true, plus the security model's."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from llm_service.channels.repository import channel_count, family_of
from llm_service.db import migrate
from llm_service.verify_privileges import privilege_checks
from llm_service.verify_queries import (
    ALEMBIC_REVISIONS,
    APP_ROLE_SQL,
    CURRENT_USER_SQL,
    DEFINER_OWNERS_SQL,
    OWNED_RELATIONS_SQL,
    POWERFUL_MEMBERSHIPS_SQL,
    PUBLIC_TABLES_SQL,
    TENANT_TABLES_SQL,
    VECTOR_VERSION_SQL,
    count_rows_sql,
)

EXPECTED_TABLES = frozenset(
    {
        "tenants", "channel_taxonomy", "attribution_events", "attribution_allocations",
        "revenue_ledger", "revenue_state_transitions", "dead_events", "reconciliation_runs",
        "channel_state_transitions", "channel_assignment_corrections", "pii_audit_findings",
        "llm_api_calls", "llm_monthly_costs", "investigations", "investigation_tool_calls",
        "explanation_cache", "budget_optimization_jobs", "llm_validation_failures",
        "investigation_events", "data_change_journal", "pii_scan_queue",
        "job_idempotency_keys", "run_cancel_requests",
    }
)  # fmt: skip
GLOBAL_TABLES = frozenset({"channel_taxonomy", "channel_state_transitions", "alembic_version"})


@dataclass(frozen=True)
class Check:
    """One verified fact: its name, whether it holds, and what was seen."""

    name: str
    ok: bool
    detail: str


async def tenant_tables(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every table holding a tenant's rows, discovered from the catalog, with its RLS state."""
    return list(await conn.fetch(TENANT_TABLES_SQL))


async def run_checks(
    owner: asyncpg.Connection, app: asyncpg.Connection, app_role: str
) -> list[Check]:
    """Run every check; `owner` and `app` are connections as the owner and the application role."""
    checks: list[Check] = []
    tables = {r["tablename"] for r in await owner.fetch(PUBLIC_TABLES_SQL)}
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
    versions = [r["version_num"] for r in await owner.fetch(ALEMBIC_REVISIONS)]
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
        APP_ROLE_SQL,
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
        OWNED_RELATIONS_SQL,
        app_role,
    )
    checks.append(Check("application role owns no table", owned == 0, f"owns {owned} relations"))

    powerful = await owner.fetchval(
        POWERFUL_MEMBERSHIPS_SQL,
        app_role,
    )
    checks.append(
        Check(
            "application role inherits no bypass",
            powerful == 0,
            f"member of {powerful} superuser/bypass roles",
        )
    )

    current = await app.fetchval(CURRENT_USER_SQL)
    leaks = []
    for r in rls:
        count = await app.fetchval(count_rows_sql(r["table_name"]))
        if count:
            leaks.append(f"{r['table_name']}={count}")
    checks.append(
        Check(
            "no tenant set: every tenant table reads empty",
            not leaks and current == app_role,
            f"as {current}: " + (", ".join(leaks) if leaks else "0 rows everywhere"),
        )
    )

    seed = await family_of(owner, "facebook_paid")
    channels = await channel_count(owner)
    checks.append(
        Check(
            "taxonomy seed",
            seed == "paid_social",
            f"facebook_paid -> {seed}; {channels} channel codes",
        )
    )

    vector = await owner.fetchval(VECTOR_VERSION_SQL)
    checks.append(Check("pgvector installed", vector is not None, f"vector {vector}"))

    definers = await owner.fetch(DEFINER_OWNERS_SQL)
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
