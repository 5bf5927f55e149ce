"""`verify`'s privilege checks: what the application role could widen, read from the catalog.

A future migration that reopens a hole (a function left to PUBLIC, a definer function without a
pinned search_path, TEMP or CREATE for the application role, a money column it may write) fails
these checks, and so the suite.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

# Functions of ours (not an extension's) in public.
_OUR_FUNCTIONS = """
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
"""

PUBLIC_FUNCTIONS_SQL = f"""
SELECT p.oid::regprocedure::text {_OUR_FUNCTIONS}
  AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
              WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
ORDER BY 1
"""

# search_path must be set, and its last entry pg_temp (else pg_temp is searched first).
UNPINNED_DEFINERS_SQL = f"""
SELECT p.oid::regprocedure::text {_OUR_FUNCTIONS}
  AND p.prosecdef
  AND NOT EXISTS (
      SELECT 1 FROM unnest(coalesce(p.proconfig, '{{}}')) AS c(setting)
      WHERE c.setting LIKE 'search_path=%'
        AND btrim(split_part(c.setting, ',', -1)) = 'pg_temp'
        AND position('"$user"' IN c.setting) = 0)
ORDER BY 1
"""

UNGUARDED_DEFINER_TRIGGERS_SQL = f"""
SELECT p.oid::regprocedure::text {_OUR_FUNCTIONS}
  AND p.prosecdef AND p.prorettype = 'trigger'::regtype AND p.prosrc NOT LIKE '%TG_RELID%'
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
READ_ONLY_TABLES = ("llm_monthly_costs",)

WRITABLE_PROTECTED_SQL = """
SELECT t.tbl || '.' || t.col || ': UPDATE'
  FROM unnest($2::text[], $3::text[]) AS t(tbl, col)
 WHERE has_column_privilege($1, t.tbl, t.col, 'UPDATE')
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
    unguarded = [r[0] for r in await owner.fetch(UNGUARDED_DEFINER_TRIGGERS_SQL)]
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
    writable = [
        r[0]
        for r in await owner.fetch(
            WRITABLE_PROTECTED_SQL, app_role, tables, columns, list(READ_ONLY_TABLES)
        )
    ]
    check(
        "committed money and limits are read-only to the application role",
        not writable,
        f"{len(columns)} columns, {len(READ_ONLY_TABLES)} table protected"
        + (f"; writable: {', '.join(writable)}" if writable else ""),
    )
