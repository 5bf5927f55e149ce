"""One place sets the tenant: `llm_service.db.queries` (SET_TENANT / set_tenant), one import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from llm_service.db import pool

ROOT = Path(__file__).resolve().parents[3]
TREES = ("llm_service", "budgets", "cache", "bench", "tests")
HOME = "llm_service/db/queries.py"
_SETS_TENANT = re.compile(r"set_config\s*\(\s*'app\.current_tenant_id'", re.IGNORECASE)


def _modules() -> list[Path]:
    return sorted(
        p
        for tree in TREES
        for p in (ROOT / tree).rglob("*.py")
        if "migrations" not in p.relative_to(ROOT).parts[:2]
    )


def test_set_tenant_is_imported_only_from_db_queries() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module != "llm_service.db.queries":
                names = {a.name for a in node.names}
                if names & {"set_tenant", "SET_TENANT"}:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module}")
    assert found == []
    assert not hasattr(pool, "set_tenant"), "db.pool must not re-export set_tenant"


def test_only_db_queries_writes_the_tenant_setting() -> None:
    """No other shipped module or bench script spells the statement that sets the tenant."""
    found = []
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel == HOME or rel.startswith("tests/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and _SETS_TENANT.search(node.value):
                found.append(f"{rel}:{node.lineno}")
    assert found == []
