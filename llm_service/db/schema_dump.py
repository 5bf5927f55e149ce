"""A canonical, diffable description of the `public` schema, read from the catalog.

Raw ``pg_dump`` text differs between server versions (15 vs 18) and PostgreSQL 18's pg_dump adds
random ``\\restrict`` lines, so it cannot be committed and compared. This module renders the
parts of the schema that matter (tables, columns, constraints, indexes, triggers, row-level
security, policies, comments, functions, extensions and the grants of the service's roles) as
sorted, deterministic SQL-ish text. The committed copy lives in
``llm_service/migrations/canonical_schema.sql`` and a test compares a freshly migrated
database against it. Regenerate it with::

    python -m llm_service.db.schema_dump URL > llm_service/migrations/canonical_schema.sql

where URL is the *owner's* URL of a freshly migrated database (the role the migrations ran as:
it is rendered as ``<owner>`` so the text does not depend on the deployment's user name).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import psycopg

from llm_service.db import schema_queries as queries

SCHEMA = "public"
#: Roles whose grants are part of the schema's security model.
SERVICE_ROLES: tuple[str, ...] = ("llm_app", "llm_crosstenant")
REGENERATE_COMMAND = (
    "python -m llm_service.db.schema_dump URL > llm_service/migrations/canonical_schema.sql"
)

_HEADER = f"""\
-- Canonical description of the `{SCHEMA}` schema after `alembic upgrade head`.
-- Generated from the catalog, not by pg_dump; do not edit by hand. Regenerate with:
--   {REGENERATE_COMMAND}
-- (URL: the owner's URL of a freshly migrated database; the owner is shown as <owner>.)
"""

_RELKINDS = {"v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE", "f": "FOREIGN TABLE"}
_POLICY_COMMANDS = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_TRIGGER_STATES = {
    "O": "",
    "D": " -- DISABLED",
    "R": " -- ENABLE REPLICA",
    "A": " -- ENABLE ALWAYS",
}


def _literal(text: str | None) -> str:
    """A SQL string literal (or NULL)."""
    if text is None:
        return "NULL"
    return "'" + text.replace("'", "''") + "'"


def _normalise_block(text: str) -> str:
    """Trailing whitespace and blank edges removed, line endings unified."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _rows(conn: psycopg.Connection[Any], query: str, **params: object) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def _column_line(row: Sequence[Any]) -> str:
    name, type_, not_null, default, identity, generated, _comment = row
    parts = [f"    COLUMN {name} {type_}"]
    if not_null:
        parts.append("NOT NULL")
    if identity:
        parts.append(
            "GENERATED " + ("ALWAYS" if identity == "a" else "BY DEFAULT") + " AS IDENTITY"
        )
    if default is not None:
        parts.append(
            f"GENERATED ALWAYS AS ({default}) STORED" if generated == "s" else f"DEFAULT {default}"
        )
    return " ".join(parts)


def _table_section(conn: psycopg.Connection[Any], table: Sequence[Any]) -> list[str]:
    oid, name, rls_enabled, rls_forced, comment, owner = table
    out = [f"TABLE {name}  -- owner: {owner}"]
    out.append(f"    COMMENT {_literal(comment)}")
    columns = _rows(conn, queries.COLUMNS_SQL, oid=oid)
    out += [_column_line(c) for c in columns]
    out += [f"    COMMENT ON COLUMN {c[0]} {_literal(c[6])}" for c in columns if c[6] is not None]
    out += [f"    CONSTRAINT {n} {d}" for n, d in _rows(conn, queries.CONSTRAINTS_SQL, oid=oid)]
    out += [f"    INDEX {n}: {d}" for n, d in _rows(conn, queries.INDEXES_SQL, oid=oid)]
    out += [
        f"    TRIGGER {n}: {d}{_TRIGGER_STATES.get(s, f' -- tgenabled={s}')}"
        for n, d, s in _rows(conn, queries.TRIGGERS_SQL, oid=oid)
    ]
    out.append(
        "    ROW LEVEL SECURITY "
        + ("ENABLED" if rls_enabled else "DISABLED")
        + (" FORCED" if rls_forced else " NOT FORCED")
    )
    for pname, permissive, cmd, roles, using_expr, check_expr in _rows(
        conn, queries.POLICIES_SQL, oid=oid
    ):
        line = (
            f"    POLICY {pname} AS {'PERMISSIVE' if permissive else 'RESTRICTIVE'}"
            f" FOR {_POLICY_COMMANDS.get(cmd, cmd)} TO {', '.join(roles)}"
        )
        if using_expr is not None:
            line += f" USING ({using_expr})"
        if check_expr is not None:
            line += f" WITH CHECK ({check_expr})"
        out.append(line)
    out += [
        f"    GRANT {privileges} TO {grantee}"
        for grantee, privileges in _rows(
            conn, queries.TABLE_GRANTS_SQL, schema=SCHEMA, table=name, roles=list(SERVICE_ROLES)
        )
    ]
    out += [
        f"    GRANT {privilege} ({columns}) TO {grantee}"
        for grantee, privilege, columns in _rows(
            conn, queries.COLUMN_GRANTS_SQL, schema=SCHEMA, table=name, roles=list(SERVICE_ROLES)
        )
    ]
    return out


def _function_section(row: Sequence[Any]) -> list[str]:
    _oid, name, args, definition, secdef, owner, comment, grantees = row
    return [
        f"FUNCTION {name}({args})  -- owner: {owner}; "
        + ("SECURITY DEFINER" if secdef else "SECURITY INVOKER")
        + f"; EXECUTE: {', '.join(grantees) or '-'}",
        f"    COMMENT {_literal(comment)}",
        _normalise_block(definition),
    ]


def dump_schema(conn: psycopg.Connection[Any]) -> str:
    """The canonical text of the `public` schema seen through `conn` (connect as the owner)."""
    sections: list[list[str]] = [[_HEADER.rstrip("\n")]]
    sections.append([f"EXTENSION {e}" for (e,) in _rows(conn, queries.EXTENSIONS_SQL)])
    sections.append(
        [
            f"SCHEMA {SCHEMA} GRANT {privileges} TO {grantee}"
            for grantee, privileges in _rows(
                conn, queries.SCHEMA_GRANTS_SQL, schema=SCHEMA, roles=list(SERVICE_ROLES)
            )
        ]
    )
    others = _rows(conn, queries.OTHER_RELATIONS_SQL, schema=SCHEMA, roles=list(SERVICE_ROLES))
    if others:
        sections.append(
            [
                f"{_RELKINDS.get(kind, 'RELATION ' + kind)} {name}"
                + "".join(f"\n    GRANT {g}" for g in grants)
                for name, kind, grants in others
            ]
        )
    sections += [_table_section(conn, t) for t in _rows(conn, queries.TABLES_SQL, schema=SCHEMA)]
    sections += [_function_section(f) for f in _rows(conn, queries.FUNCTIONS_SQL, schema=SCHEMA)]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def dump_schema_url(url: str) -> str:
    """:func:`dump_schema` of the database at `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        return dump_schema(conn)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llm_service.db.schema_dump URL``: write the canonical schema to stdout."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write(f"usage: {REGENERATE_COMMAND}\n")
        return 2
    sys.stdout.write(dump_schema_url(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
