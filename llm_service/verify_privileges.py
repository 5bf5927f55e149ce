"""`verify`'s privilege checks: what the application role could widen, read from the catalog.

A future migration that reopens a hole (a function left to PUBLIC, a definer function without a
pinned search_path, TEMP or CREATE for the application role, a money column it may write) fails
these checks, and so the suite.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import asyncpg

CROSSTENANT_ROLE = "llm_crosstenant"

# Functions of ours (not an extension's) in any schema but the system's.
_OUR_FUNCTIONS = """
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
"""

PUBLIC_FUNCTIONS_SQL = f"""
SELECT p.oid::regprocedure::text {_OUR_FUNCTIONS}
  AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
              WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
ORDER BY 1
"""

# search_path must be exactly ours: pg_temp once, and last (a schema is searched where it is
# first named; left out, pg_temp is searched first).
PINNED_SEARCH_PATH = "search_path=pg_catalog, public, pg_temp"
UNPINNED_DEFINERS_SQL = f"""
SELECT p.oid::regprocedure::text {_OUR_FUNCTIONS}
  AND p.prosecdef
  AND NOT ('{PINNED_SEARCH_PATH}' = ANY (coalesce(p.proconfig, '{{}}')))
ORDER BY 1
"""

DEFINER_TRIGGERS_SQL = f"""
SELECT p.oid::regprocedure::text AS function, p.prosrc AS source,
       ARRAY(SELECT t.tgrelid::regclass::text FROM pg_trigger t
             WHERE t.tgfoid = p.oid AND NOT t.tgisinternal) AS tables
{_OUR_FUNCTIONS}
  AND p.prosecdef AND p.prorettype = 'trigger'::regtype
ORDER BY 1
"""
# The guard of migrations/sqlhelpers.trigger_table_guard, as code (not a word in a comment).
_GUARD = re.compile(r"^\s*IF TG_RELID <> 'public\.([a-z_][a-z0-9_]*)'::regclass THEN", re.MULTILINE)

# A tenant table's policies: the tenant policy for everyone, the cross-tenant ones for the
# definer role only. Any other permissive policy is ORed in and could leak rows.
EXTRA_POLICIES_SQL = """
SELECT c.relname || '.' || p.polname
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND p.polpermissive
   AND NOT (p.polname = 'tenant_isolation_policy' AND p.polroles = '{0}'::oid[])
   AND NOT (p.polname IN ('crosstenant_policy', 'crosstenant_lock_policy')
            AND p.polroles = ARRAY[(SELECT oid FROM pg_roles WHERE rolname = $1)])
ORDER BY 1
"""

# Membership in any role (even NOINHERIT: SET ROLE works) and stored settings (ALTER ROLE ...
# SET outlives every session) widen the application role beyond its grants.
ROLE_WIDENING_SQL = """
SELECT 'member of ' || pg_get_userbyid(m.roleid)
  FROM pg_auth_members m WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1)
UNION ALL
SELECT 'stored setting ' || s.setting
  FROM pg_db_role_setting d CROSS JOIN LATERAL unnest(d.setconfig) AS s(setting)
 WHERE d.setrole = (SELECT oid FROM pg_roles WHERE rolname = $1)
UNION ALL
SELECT 'REPLICATION' FROM pg_roles WHERE rolname = $1 AND rolreplication
ORDER BY 1
"""

CREATE_PRIVILEGES_SQL = """
SELECT 'database ' || current_database() || ': ' || x.privilege
  FROM unnest(ARRAY['CREATE', 'TEMPORARY']) AS x(privilege)
 WHERE has_database_privilege($1, current_database(), x.privilege)
UNION ALL
SELECT 'schema ' || n.nspname || ': CREATE'
  FROM pg_namespace n
 WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
   AND has_schema_privilege($1, n.oid, 'CREATE')
UNION ALL
SELECT 'function ' || f || ': EXECUTE'
  FROM unnest(ARRAY['pg_catalog.lo_create(oid)', 'pg_catalog.lo_creat(integer)',
                    'pg_catalog.lo_from_bytea(oid, bytea)']) AS f
 WHERE has_function_privilege($1, f, 'EXECUTE')
ORDER BY 1
"""

# Money and limits the service committed: the application role may not write them.
PROTECTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "investigations": (
        "tenant_id", "max_cost_cents", "timeout_ms", "max_steps", "cost_cents", "question",
    ),
    "budget_optimization_jobs": ("tenant_id", "max_cost_cents", "cost_cents", "params"),
    "llm_api_calls": (
        "tenant_id", "reserved_cents", "reservation_expires_at", "model", "endpoint",
        "investigation_id", "budget_optimization_job_id", "started_at", "max_tokens",
    ),
}  # fmt: skip
# Columns the application role may not set when it creates a row (the month a call counts in,
# a run's recorded spend and state: the database sets them).
PROTECTED_AT_INSERT: dict[str, tuple[str, ...]] = {
    "investigations": ("cost_cents", "status", "result", "started_at", "attempts"),
    "budget_optimization_jobs": ("cost_cents", "status", "recommendations", "started_at"),
    "llm_api_calls": (
        "started_at", "cost_cents", "status", "settled_at", "input_tokens", "output_tokens",
        "usage_anomaly", "raw_usage", "cost_is_estimate",
    ),
}  # fmt: skip
READ_ONLY_TABLES = ("llm_monthly_costs",)

WRITABLE_PROTECTED_SQL = """
SELECT t.tbl || '.' || t.col || ': UPDATE'
  FROM unnest($2::text[], $3::text[]) AS t(tbl, col)
 WHERE has_column_privilege($1, t.tbl, t.col, 'UPDATE')
UNION ALL
SELECT t.tbl || '.' || t.col || ': INSERT'
  FROM unnest($5::text[], $6::text[]) AS t(tbl, col)
 WHERE has_column_privilege($1, t.tbl, t.col, 'INSERT')
UNION ALL
SELECT tb.tbl || ': ' || pr.privilege
  FROM unnest($4::text[]) AS tb(tbl)
 CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS pr(privilege)
 WHERE has_table_privilege($1, tb.tbl, pr.privilege)
UNION ALL
SELECT 'llm_api_calls: ' || p
  FROM unnest(ARRAY['DELETE', 'TRUNCATE']) AS p
 WHERE has_table_privilege($1, 'llm_api_calls', p)
ORDER BY 1
"""


async def privilege_checks(
    owner: asyncpg.Connection, app_role: str, check: Callable[[str, bool, str], object]
) -> None:
    """Add each privilege check through `check(name, ok, detail)`."""
    open_functions = [r[0] for r in await owner.fetch(PUBLIC_FUNCTIONS_SQL)]
    check(
        "no function of ours executable by PUBLIC",
        not open_functions,
        "none" if not open_functions else ", ".join(open_functions),
    )
    unpinned = [r[0] for r in await owner.fetch(UNPINNED_DEFINERS_SQL)]
    check(
        "every definer function pins search_path, pg_temp last",
        not unpinned,
        "all pinned" if not unpinned else "unpinned: " + ", ".join(unpinned),
    )
    unguarded = [r["function"] for r in await owner.fetch(DEFINER_TRIGGERS_SQL) if not _guarded(r)]
    check(
        "definer trigger functions refuse other tables (TG_RELID)",
        not unguarded,
        "all guarded" if not unguarded else "unguarded: " + ", ".join(unguarded),
    )
    creatable = [r[0] for r in await owner.fetch(CREATE_PRIVILEGES_SQL, app_role)]
    check(
        "application role can create nothing (no TEMP, no CREATE, no large objects)",
        not creatable,
        f"{app_role}: " + ("nothing" if not creatable else ", ".join(creatable)),
    )
    tables = [t for t, cols in PROTECTED_COLUMNS.items() for _ in cols]
    columns = [c for cols in PROTECTED_COLUMNS.values() for c in cols]
    insert_tables = [t for t, cols in PROTECTED_AT_INSERT.items() for _ in cols]
    insert_columns = [c for cols in PROTECTED_AT_INSERT.values() for c in cols]
    writable = [
        r[0]
        for r in await owner.fetch(
            WRITABLE_PROTECTED_SQL,
            app_role,
            tables,
            columns,
            list(READ_ONLY_TABLES),
            insert_tables,
            insert_columns,
        )
    ]
    check(
        "committed money and limits are read-only to the application role",
        not writable,
        f"{len(columns) + len(insert_columns)} columns, {len(READ_ONLY_TABLES)} table protected"
        + (f"; writable: {', '.join(writable)}" if writable else ""),
    )
    widened = [r[0] for r in await owner.fetch(ROLE_WIDENING_SQL, app_role)]
    check(
        "application role has no membership, stored setting or REPLICATION",
        not widened,
        f"{app_role}: " + ("none" if not widened else ", ".join(widened)),
    )
    extra = [r[0] for r in await owner.fetch(EXTRA_POLICIES_SQL, CROSSTENANT_ROLE)]
    check(
        "tenant tables carry only the tenant and cross-tenant policies",
        not extra,
        "none extra" if not extra else "extra: " + ", ".join(extra),
    )


def _guarded(trigger_function: asyncpg.Record) -> bool:
    """The function opens with the table guard, and every trigger using it is on that table."""
    guard = _GUARD.search(trigger_function["source"])
    if guard is None:
        return False
    own = {guard.group(1), f"public.{guard.group(1)}"}
    return all(table in own for table in trigger_function["tables"])
