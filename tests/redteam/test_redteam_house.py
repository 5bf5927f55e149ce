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
import re
import subprocess
import sys
import unicodedata
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

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


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    """Every str constant that is not a docstring."""
    docs: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        ):
            docs.add(id(node.body[0].value))
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


@pytest.mark.xfail(
    strict=True,
    reason="two idempotency rules: a budget retry naming a default explicitly replays (200), an "
    "investigation retry naming its defaults explicitly is 409",
)
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
