"""`verify`'s catalog queries: the deployment's tables, roles, functions and privileges."""

from __future__ import annotations

from llm_service.db.queries import ALEMBIC_REVISIONS as ALEMBIC_REVISIONS

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

# Tables whose rows llm_app must not be able to lock (any UPDATE privilege, of the table or of
# one column, lets a role lock rows: SELECT ... FOR UPDATE / SHARE; migration 012).
LOCKABLE_TABLES_SQL = """
SELECT t.tbl || ': UPDATE'
  FROM unnest($2::text[]) AS t(tbl)
 WHERE has_any_column_privilege($1, t.tbl, 'UPDATE')
ORDER BY 1
"""

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

PUBLIC_TABLES_SQL = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
APP_ROLE_SQL = (
    "SELECT rolsuper, rolbypassrls, rolcanlogin, rolcreaterole, rolcreatedb FROM pg_roles "
    "WHERE rolname = $1"
)
OWNED_RELATIONS_SQL = (
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = $1"
)
POWERFUL_MEMBERSHIPS_SQL = (
    "SELECT count(*) FROM pg_roles r "
    "WHERE pg_has_role($1, r.oid, 'MEMBER') AND r.rolname <> $1 "
    "AND (r.rolsuper OR r.rolbypassrls)"
)
CURRENT_USER_SQL = "SELECT current_user"
VECTOR_VERSION_SQL = "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
DEFINER_OWNERS_SQL = (
    "SELECT p.proname, pg_get_userbyid(p.proowner) AS owner, r.rolsuper, r.rolbypassrls "
    "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "JOIN pg_roles r ON r.oid = p.proowner "
    "WHERE n.nspname = 'public' AND p.prosecdef"
)


def count_rows_sql(table: str) -> str:
    """A row count of one table (a catalog name, quoted)."""
    return f'SELECT count(*) FROM "{table}"'
