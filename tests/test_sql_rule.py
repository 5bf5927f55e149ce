"""The SQL rule: statements live only in repository and query modules.

The rule: a string literal (a constant, an f-string, or literals joined by `+` or by adjacency)
whose text starts with an upper-case SQL command word — SELECT, INSERT, UPDATE, DELETE, WITH,
CREATE, ALTER, DROP, GRANT, REVOKE, SET, SHOW, CALL, COPY, TRUNCATE, LOCK, BEGIN, COMMIT — followed
by a space (or a line break) is an SQL statement, and may appear only in a module named
`repository.py`, `*_repository.py`, `queries.py` or `*_queries.py`, or under a `sql/` or
`migrations/` folder. asyncpg's command tags ("UPDATE 1", "DELETE 0") are not statements.
The test reads the shipped packages (llm_service, budgets, cache) with `ast`, so comments and
prose docstrings ("Set the tenant ...") never count and SQL hidden in an f-string still does.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llm_service", "budgets", "cache")
COMMANDS = (
    "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "CREATE", "ALTER", "DROP", "GRANT", "REVOKE",
    "SET", "SHOW", "CALL", "COPY", "TRUNCATE", "LOCK", "BEGIN", "COMMIT",
)  # fmt: skip
_STATEMENT = re.compile(r"^[\s(]*(?:" + "|".join(COMMANDS) + r")\s")
_COMMAND_TAG = re.compile(r"^(?:INSERT \d+ \d+|(?:UPDATE|DELETE|SELECT|COPY) \d+)$")
_ALLOWED_NAME = re.compile(r"^(?:\w+_)?(?:repository|queries)\.py$")
_ALLOWED_DIRS = {"sql", "migrations"}

# Modules other helpers of issue 14 are rewriting now; each is allowed for now, and the lead
# empties this list once their branches are merged (a listed module that no longer holds SQL
# fails `test_pending_list_is_current`, so the list cannot go stale).
PENDING = {
    "cache/store.py",  # cache behind an interface; one place that sets the tenant
}

# Modules that render SQL text without sending it: not statements the service runs.
RENDERS_SQL_TEXT = {
    # Writes the canonical schema file: GRANT lines are text in that file, never executed.
    "llm_service/db/schema_dump.py",
}


def _module_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _allowed(path: Path) -> bool:
    rel = path.relative_to(ROOT)
    return bool(_ALLOWED_NAME.match(rel.name)) or bool(_ALLOWED_DIRS & set(rel.parts[:-1]))


def _literal_text(node: ast.AST) -> str | None:
    """The text of a string literal, an f-string (holes as `{}`) or a `+` chain of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
            for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _literal_text(node.left)
        if left is not None:
            return left + (_literal_text(node.right) or "{}")
    return None


def is_statement(text: str) -> bool:
    """Whether a literal's text reads as an SQL statement under the rule."""
    return bool(_STATEMENT.match(text)) and not _COMMAND_TAG.match(text.strip())


def statements_in(source: str) -> list[tuple[int, str]]:
    """(line, first words) of every SQL statement literal in `source`."""
    found: dict[int, str] = {}
    for node in ast.walk(ast.parse(source)):
        text = _literal_text(node)
        if text is not None and is_statement(text):
            found.setdefault(node.lineno, " ".join(text.split())[:60])
    return sorted(found.items())


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def offenders() -> dict[str, list[tuple[int, str]]]:
    """Every module outside the rule's rooms that holds an SQL statement."""
    result: dict[str, list[tuple[int, str]]] = {}
    for path in _sources():
        if _allowed(path):
            continue
        hits = statements_in(path.read_text(encoding="utf-8"))
        if hits:
            result[_module_name(path)] = hits
    return result


def test_sql_only_in_repository_and_query_modules() -> None:
    found = {
        name: hits
        for name, hits in offenders().items()
        if name not in PENDING and name not in RENDERS_SQL_TEXT
    }
    listing = "\n".join(
        f"{name}:{line}: {text}" for name, hits in sorted(found.items()) for line, text in hits
    )
    assert not found, f"SQL outside repository/query modules:\n{listing}"


def test_pending_list_is_current() -> None:
    """A PENDING or RENDERS_SQL_TEXT module without SQL (or gone) must leave the list."""
    current = offenders()
    stale = sorted(name for name in PENDING | RENDERS_SQL_TEXT if name not in current)
    assert not stale, f"remove from the allow-lists (no SQL left): {stale}"


def test_the_detector_sees_disguised_statements() -> None:
    """f-strings, `+` chains, adjacent literals, leading parentheses and line breaks all count."""
    source = '''
table = "t"
a = f"SELECT * FROM {table}"
b = "DELETE " + table
c = ("UPDATE t "
     "SET x = 1")
d = """
    WITH x AS (SELECT 1) SELECT * FROM x"""
e = "(SELECT 1)"
f = "SET\\nLOCAL statement_timeout = 0"
'''
    lines = [line for line, _ in statements_in(source)]
    assert lines == [3, 4, 5, 7, 9, 10]


def test_the_detector_ignores_prose_and_command_tags() -> None:
    source = '''
def f(status):
    """Set the tenant for this transaction."""
    g = "drop"
    h = " with "
    i = "select a model"
    j = ("SELECT", "INSERT")
    return status == "UPDATE 1" or status == "INSERT 0 1"
'''
    assert statements_in(source) == []


def test_allowed_rooms() -> None:
    for name in ("repository.py", "channel_repository.py", "queries.py", "db_queries.py"):
        assert _allowed(ROOT / "llm_service" / "x" / name)
    assert _allowed(ROOT / "llm_service" / "migrations" / "versions" / "a.py")
    assert _allowed(ROOT / "llm_service" / "sql" / "a.py")
    for name in ("service.py", "repository_helpers.py", "myqueries.py"):
        assert not _allowed(ROOT / "llm_service" / "x" / name)
