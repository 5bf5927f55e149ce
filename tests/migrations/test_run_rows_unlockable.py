"""Migration 012: its downgrade restores 011's state exactly (grants, functions, triggers)."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import psycopg

from llm_service.db import migrate
from llm_service.db.schema_dump import dump_schema
from llm_service.db.urls import DatabaseUrls

BEFORE = "011_run_guards_without_gaps"
THIS = "012_run_rows_unlockable_by_app"


def _dump(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return dump_schema(conn)


def _update_grants(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.column_privileges "
            "WHERE grantee = 'llm_app' AND privilege_type = 'UPDATE' AND table_name IN "
            "('investigations', 'budget_optimization_jobs', 'llm_api_calls') ORDER BY 1, 2"
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_downgrade_to_011_restores_its_schema_exactly(
    scratch_database: Callable[[str], DatabaseUrls],
) -> None:
    urls = scratch_database("m012")
    migrate.upgrade(urls.owner, BEFORE)
    before = _dump(urls.owner)
    grants = _update_grants(urls.owner)
    assert len(grants) == 32  # 006's and 007's column grants: 13 + 10 + 9
    migrate.upgrade(urls.owner, THIS)
    assert _update_grants(urls.owner) == []
    assert _dump(urls.owner) != before
    migrate.downgrade(urls.owner, BEFORE)
    assert migrate.current_revisions(urls.owner) == [BEFORE]
    after = _dump(urls.owner)
    assert after == before, "\n".join(
        difflib.unified_diff(before.splitlines(), after.splitlines(), BEFORE, "down", lineterm="")
    )
    assert _update_grants(urls.owner) == grants
