"""The SQL rule: statements live only in repository and query modules.

The rule: a string or bytes literal (a constant, an f-string, or literals joined by `+` or by
adjacency) is an SQL statement when, after any whitespace, parentheses, f-string holes and `--`
or `/* */` comments, its text starts with an upper-case SQL command word of COMMANDS followed by
a space, a line break or `;`, or (in any case) has a statement's shape ("select ... from",
"insert into", "update t set", "set x =", "with x as (", ...) and SQL punctuation ($n, =, *, ::,
a parenthesis or ;). Such literals may appear only in a module named `repository.py`,
`*_repository.py`, `queries.py` or `*_queries.py`, or under a `sql/` or `migrations/` folder.
asyncpg's command tags ("UPDATE 1", "DELETE 0", "INSERT 0 1") are not statements; "SELECT 1" is.
The test reads the shipped packages (llm_service, budgets, cache) with `ast`, so comments and
prose docstrings ("Set the tenant ...") never count and SQL hidden in an f-string still does.

Documented limits (chosen so that prose and log messages never count):
- fragments that are not a statement's start ("id FROM t WHERE ...", ", x = $1") built into
  statements elsewhere are not seen: review keeps them in query modules;
- a bare command word with nothing after it ("COMMIT", "ROLLBACK") is not seen (the same text
  is a plain constant, e.g. a tuple of command names);
- lower-case SQL without SQL punctuation ("delete from t") is not seen, nor text assembled at
  run time from names (`" ".join(...)`, `str.join`, variables).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llm_service", "budgets", "cache")
COMMANDS = (
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "TABLE", "CREATE", "ALTER",
    "DROP", "GRANT", "REVOKE", "COMMENT", "SET", "RESET", "SHOW", "DISCARD", "CALL", "DO", "COPY",
    "TRUNCATE", "LOCK", "BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
    "EXPLAIN", "ANALYZE", "VACUUM", "REINDEX", "CLUSTER", "REFRESH", "LISTEN", "UNLISTEN",
    "NOTIFY", "PREPARE", "EXECUTE", "DEALLOCATE", "DECLARE", "FETCH", "CLOSE",
)  # fmt: skip
# Whitespace, parentheses, f-string holes and SQL comments may come before the command word.
_LEAD = r"^(?:\s|\(|\{\}|--[^\n]*(?:\n|$)|/\*.*?\*/)*"
_STATEMENT = re.compile(_LEAD + r"(?:" + "|".join(COMMANDS) + r")(?:\s|;)", re.DOTALL)
# Any case ("select ... from"): only in a statement's shape, and only with SQL punctuation
# (a $n placeholder, =, *, ::, a parenthesis or ;), so prose such as "select a model from the
# list" or "delete from cache failed" is not a statement.
_ANY_CASE = re.compile(
    _LEAD
    + r"""(?:
        select\s.+?\sfrom\s
      | select\s+(?:set_config|current_setting|pg_\w+)\s*\(
      | insert\s+into\s
      | delete\s+from\s
      | update\s+[\w.]+(?:\s+\w+)?\s+set\s
      | merge\s+into\s
      | with\s+(?:recursive\s+)?\w+\s+as\s*(?:(?:not\s+)?materialized\s*)?\(
      | set\s+(?:local\s+|session\s+)?[\w.]+\s*(?:=|to\s)
      | (?:create|alter|drop)\s+(?:or\s+replace\s+)?(?:table|index|function|role|policy|view
            |schema|extension|trigger|type|sequence|database)\s
      | (?:grant|revoke)\s.+?\son\s
    )""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_SQL_PUNCTUATION = re.compile(r"\$\d|=|\*|::|\(|;")
# asyncpg's command tags; "SELECT <n>" is not among them: it is a statement ("SELECT 1").
_COMMAND_TAG = re.compile(r"^(?:INSERT \d+ \d+|(?:UPDATE|DELETE|MERGE|COPY) \d+)$")
_ALLOWED_NAME = re.compile(r"^(?:\w+_)?(?:repository|queries)\.py$")
_ALLOWED_DIRS = {"sql", "migrations"}

# Modules other helpers of issue 14 are rewriting now; each is allowed for now, and the lead
# empties this list once their branches are merged (a listed module that no longer holds SQL
# fails `test_pending_list_is_current`, so the list cannot go stale).
PENDING: set[str] = set()

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
    if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
        return node.value.decode("latin-1")
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
    if _COMMAND_TAG.match(text.strip()):
        return False
    if _STATEMENT.match(text):
        return True
    return bool(_ANY_CASE.match(text)) and bool(_SQL_PUNCTUATION.search(text))


def statements_in(source: str) -> list[tuple[int, str]]:
    """(line, first words) of every SQL statement literal (str or bytes) in `source`."""
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


def test_the_detector_sees_every_command_word_case_bytes_and_comments() -> None:
    """Lower-case statements, bytes, leading comments and the rarer command words count."""
    source = '''
a = "select id from investigations where id = $1"
b = b"SELECT id FROM investigations"
c = """-- the run
SELECT id FROM investigations"""
d = "EXPLAIN (ANALYZE) SELECT 1"
e = "DISCARD PLANS"
f = "RESET ROLE"
g = "ROLLBACK TO s"
h = "TABLE t"
i = "SELECT 1"
j = "/* hint */ insert into t (a) values ($1)"
k = "Update runs SET x = 1 WHERE id = $1"
l = "select set_config('app.current_tenant_id', $1, true)"
m = "set local statement_timeout = 0"
n = "with x as (select 1) select * from x"
o = "VALUES (1), (2)"
'''
    lines = [line for line, _ in statements_in(source)]
    assert lines == [2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]


def test_the_detector_ignores_lower_case_prose_and_log_messages() -> None:
    source = """
a = "select a model from the list"
b = "update the budget, then retry"
c = "set the tenant before the query"
d = "with the tenant set, the query runs"
e = "delete from cache failed"
f = "selected 3 rows from the file"
g = "Select the run to explain (or press enter)"
h = "DONE"
i = ("COMMIT", "ROLLBACK")
"""
    assert statements_in(source) == []


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
