"""Migration history: one linear head, a clean round trip, no drift from the canonical schema."""

from __future__ import annotations

import difflib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
from alembic.script import ScriptDirectory

from llm_service.db import migrate
from llm_service.db.schema_dump import REGENERATE_COMMAND, dump_schema
from llm_service.db.urls import DatabaseUrls
from llm_service.verify import EXPECTED_TABLES

REVISIONS = [
    "001_core_schema",
    "002_pii_controls",
    "003_data_governance",
    "004_llm_subsystem",
    "005_pii_scan_incremental",
    "006_trust_privileges",
    "007_priced_as_billed",
    "008_job_kit",
    "009_job_leases_and_keys",
    "010_run_writes_need_the_lease",
    "011_run_guards_without_gaps",
    "012_run_rows_unlockable_by_app",
]
VERSIONS_DIR = migrate.MIGRATIONS_DIR / "versions"
CANONICAL_SCHEMA = migrate.MIGRATIONS_DIR / "canonical_schema.sql"
ALL_TABLES = EXPECTED_TABLES | {"alembic_version"}


def _script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(migrate.alembic_config("postgresql://x@/x"))


def _public_tables(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def _leftovers_after_base(url: str) -> dict[str, list[str]]:
    """What a full downgrade must remove besides tables: functions, policies, the extension."""
    with psycopg.connect(url, autocommit=True) as conn:
        functions = conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' ORDER BY 1"
        ).fetchall()
        policies = conn.execute("SELECT polname FROM pg_policy ORDER BY 1").fetchall()
        extensions = conn.execute(
            "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1"
        ).fetchall()
    return {
        "functions": [r[0] for r in functions],
        "policies": [r[0] for r in policies],
        "extensions": [r[0] for r in extensions],
    }


def test_exactly_one_head_which_is_the_last_revision() -> None:
    assert migrate.heads() == [REVISIONS[-1]]


def test_heads_work_in_a_fresh_process_that_has_not_migrated() -> None:
    # `llm-service verify` and the readiness endpoint call migrate.heads() without having run a
    # migration in that process; loading the revisions (which import migrations/sqlhelpers.py)
    # must not depend on env.py having put migrations/ on sys.path.
    result = subprocess.run(
        [sys.executable, "-c", "from llm_service.db import migrate; print(migrate.heads())"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 0, (
        "migrate.heads() fails in a fresh process (DEFECT: the revision files import "
        "`sqlhelpers`, which is only importable after migrations/env.py has run):\n"
        + result.stderr[-800:]
    )
    assert result.stdout.strip() == repr([REVISIONS[-1]])


def test_the_four_version_folders_exist() -> None:
    folders = sorted(p.name for p in VERSIONS_DIR.iterdir() if p.is_dir() and p.name[0] != "_")
    assert folders == REVISIONS
    for name in REVISIONS:
        assert (VERSIONS_DIR / name / f"{name}.py").is_file(), f"missing {name}/{name}.py"


def test_history_is_linear_and_each_revision_lives_in_its_folder() -> None:
    script = _script_directory()
    revisions = list(reversed(list(script.walk_revisions("base", "heads"))))
    assert [r.revision for r in revisions] == REVISIONS
    previous: str | None = None
    for rev in revisions:
        assert rev.down_revision == previous, (
            f"{rev.revision} revises {rev.down_revision!r}, expected {previous!r}"
        )
        assert not rev.branch_labels and not rev.dependencies, rev.revision
        assert Path(rev.path).parent.name == rev.revision
        previous = rev.revision
    assert script.get_bases() == [REVISIONS[0]]


def test_upgrade_downgrade_to_base_upgrade_round_trip(
    database_urls: DatabaseUrls, scratch_database: Callable[[str], DatabaseUrls]
) -> None:
    # The session database was migrated by the same code: its tables are the head's tables.
    head_tables = _public_tables(database_urls.owner)
    assert head_tables >= ALL_TABLES, f"missing: {sorted(ALL_TABLES - head_tables)}"
    urls = scratch_database("roundtrip")
    migrate.upgrade(urls.owner)
    assert _public_tables(urls.owner) == head_tables
    assert migrate.current_revisions(urls.owner) == [REVISIONS[-1]]
    with psycopg.connect(urls.owner, autocommit=True) as conn:
        first = dump_schema(conn)

    migrate.downgrade(urls.owner, "base")
    assert _public_tables(urls.owner) == {"alembic_version"}
    assert migrate.current_revisions(urls.owner) == []
    assert _leftovers_after_base(urls.owner) == {"functions": [], "policies": [], "extensions": []}

    migrate.upgrade(urls.owner)
    assert _public_tables(urls.owner) == head_tables
    assert migrate.current_revisions(urls.owner) == [REVISIONS[-1]]
    with psycopg.connect(urls.owner, autocommit=True) as conn:
        second = dump_schema(conn)
    assert second == first, "the schema after downgrade+upgrade differs:\n" + "\n".join(
        difflib.unified_diff(
            first.splitlines(), second.splitlines(), "first", "second", lineterm=""
        )
    )
    # The application role can still connect and read the (empty) tenant tables.
    with psycopg.connect(urls.app, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM attribution_events").fetchone() == (0,)


def test_migrated_database_matches_the_canonical_schema(database_urls: DatabaseUrls) -> None:
    how = (
        f"regenerate it from a freshly migrated database with `{REGENERATE_COMMAND}` "
        "(URL: the owner's URL) and review the diff"
    )
    assert CANONICAL_SCHEMA.is_file(), f"{CANONICAL_SCHEMA} is missing: {how}"
    expected = CANONICAL_SCHEMA.read_text()
    with psycopg.connect(database_urls.owner, autocommit=True) as conn:
        actual = dump_schema(conn)
    if actual != expected:
        diff = list(
            difflib.unified_diff(
                expected.splitlines(),
                actual.splitlines(),
                "llm_service/migrations/canonical_schema.sql",
                "migrated test database",
                lineterm="",
            )
        )
        shown = "\n".join(diff[:80]) + (
            f"\n... ({len(diff) - 80} more diff lines)" if len(diff) > 80 else ""
        )
        raise AssertionError(
            "the migrated schema drifted from llm_service/migrations/canonical_schema.sql; if the "
            f"change is intended, {how}.\n{shown}"
        )


def test_schema_dump_is_deterministic(database_urls: DatabaseUrls) -> None:
    with psycopg.connect(database_urls.owner, autocommit=True) as conn:
        first = dump_schema(conn)
        second = dump_schema(conn)
    assert first == second
    assert "\\restrict" not in first
    # It shows what matters: RLS state, policies, grants and definer functions.
    assert "ROW LEVEL SECURITY ENABLED FORCED" in first
    assert "POLICY tenant_isolation_policy" in first
    assert "GRANT SELECT TO llm_app" in first
    assert "SECURITY DEFINER" in first
