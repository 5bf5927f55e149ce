"""The catalog queries behind the canonical schema dump (llm_service.db.schema_dump)."""

from __future__ import annotations

# Objects that belong to an extension (pgvector installs its functions into public) are the
# extension's, not ours: they are represented by the extension's name alone.
NOT_EXTENSION_MEMBER = """
NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {catalog}::regclass
            AND d.objid = {oid} AND d.deptype = 'e')
"""

TABLES_SQL = f"""
SELECT c.oid, c.relname, c.relrowsecurity, c.relforcerowsecurity,
       obj_description(c.oid, 'pg_class') AS comment,
       CASE WHEN c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
            THEN '<owner>' ELSE pg_get_userbyid(c.relowner) END AS owner
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
  AND {NOT_EXTENSION_MEMBER.format(catalog="'pg_class'", oid="c.oid")}
ORDER BY c.relname
"""

OTHER_RELATIONS_SQL = f"""
SELECT c.relname, c.relkind::text,
       ARRAY(SELECT pg_get_userbyid(a.grantee) || ': ' || string_agg(a.privilege_type, ', '
                    ORDER BY a.privilege_type)
             FROM aclexplode(c.relacl) a
             WHERE pg_get_userbyid(a.grantee) = ANY(%(roles)s)
             GROUP BY a.grantee ORDER BY 1) AS grants
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('v', 'm', 'S', 'f')
  AND {NOT_EXTENSION_MEMBER.format(catalog="'pg_class'", oid="c.oid")}
ORDER BY c.relname
"""

COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(ad.adbin, ad.adrelid) AS default_expr, a.attidentity::text,
       a.attgenerated::text, col_description(a.attrelid, a.attnum) AS comment
FROM pg_attribute a
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# contype 'n' (NOT NULL as a constraint, PostgreSQL 18+) is shown on the column instead.
CONSTRAINTS_SQL = """
SELECT conname, pg_get_constraintdef(oid, true) AS def
FROM pg_constraint
WHERE conrelid = %(oid)s AND contype <> 'n'
ORDER BY conname
"""

INDEXES_SQL = """
SELECT i.relname, pg_get_indexdef(x.indexrelid) AS def
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = %(oid)s
ORDER BY i.relname
"""

TRIGGERS_SQL = """
SELECT tgname, pg_get_triggerdef(oid, true) AS def, tgenabled::text
FROM pg_trigger
WHERE tgrelid = %(oid)s AND NOT tgisinternal
ORDER BY tgname
"""

POLICIES_SQL = """
SELECT p.polname, p.polpermissive, p.polcmd::text,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END
             FROM unnest(p.polroles) AS r ORDER BY 1) AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS using_expr,
       pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr
FROM pg_policy p
WHERE p.polrelid = %(oid)s
ORDER BY p.polname
"""

TABLE_GRANTS_SQL = """
SELECT grantee, string_agg(privilege_type, ', ' ORDER BY privilege_type) AS privileges
FROM information_schema.role_table_grants
WHERE table_schema = %(schema)s AND table_name = %(table)s AND grantee = ANY(%(roles)s)
GROUP BY grantee
ORDER BY grantee
"""

# Column privileges (the application role writes only some columns of the money tables).
COLUMN_GRANTS_SQL = """
SELECT grantee, privilege_type,
       string_agg(column_name, ', ' ORDER BY column_name) AS columns
FROM information_schema.column_privileges cp
WHERE table_schema = %(schema)s AND table_name = %(table)s AND grantee = ANY(%(roles)s)
  AND NOT EXISTS (SELECT 1 FROM information_schema.role_table_grants tg
                  WHERE tg.table_schema = cp.table_schema AND tg.table_name = cp.table_name
                    AND tg.grantee = cp.grantee AND tg.privilege_type = cp.privilege_type)
GROUP BY grantee, privilege_type
ORDER BY grantee, privilege_type
"""

FUNCTIONS_SQL = f"""
SELECT p.oid, p.proname, pg_get_function_identity_arguments(p.oid) AS args,
       pg_get_functiondef(p.oid) AS def, p.prosecdef,
       CASE WHEN p.proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
            THEN '<owner>' ELSE pg_get_userbyid(p.proowner) END AS owner,
       obj_description(p.oid, 'pg_proc') AS comment,
       ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                         WHEN a.grantee = p.proowner THEN 'owner'
                         ELSE pg_get_userbyid(a.grantee) END
             FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
             WHERE a.privilege_type = 'EXECUTE' ORDER BY 1) AS execute_grantees
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.prokind IN ('f', 'p')
  AND {NOT_EXTENSION_MEMBER.format(catalog="'pg_proc'", oid="p.oid")}
ORDER BY p.proname, args
"""

EXTENSIONS_SQL = "SELECT extname FROM pg_extension ORDER BY extname"

SCHEMA_GRANTS_SQL = """
SELECT pg_get_userbyid(a.grantee) AS grantee,
       string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) AS privileges
FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
WHERE n.nspname = %(schema)s AND pg_get_userbyid(a.grantee) = ANY(%(roles)s)
GROUP BY 1
ORDER BY 1
"""
