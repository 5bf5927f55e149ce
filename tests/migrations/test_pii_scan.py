"""The PII scan: sees every tenant, walks nested JSON, records tenant and path, never the value,
and is idempotent; its personal-key list and key normalisation match the Python guard's."""

from __future__ import annotations

import re
import uuid
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from tenant_rows import insert_dead_event, insert_event, insert_ledger

from llm_service.db.pool import tenant_transaction, transaction
from llm_service.pii.redact import PERSONAL_KEYS, normalize_key
from llm_service.tenants.service import create_tenant

RAW_VALUES = ["a@b.c", "+44 20 7946 0958", "1 Main St", "90210", "10.1.2.3", "Ada Lovelace"]


async def test_scan_as_app_role_finds_nested_personal_keys_in_every_tenant_once(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool
) -> None:
    a = (await create_tenant(owner_pool, f"pii-a-{uuid.uuid4().hex[:8]}")).tenant_id
    b = (await create_tenant(owner_pool, f"pii-b-{uuid.uuid4().hex[:8]}")).tenant_id
    # (tenant, table, column, record id) -> the JSON paths the scan must report.
    expected: dict[tuple[UUID, str, str, UUID], set[str]] = {}
    clean: list[UUID] = []

    async with tenant_transaction(owner_pool, a) as conn:
        rid = await insert_event(
            conn, a, raw_payload={"context": {"customer": {"Email": "a@b.c"}}, "utm": "x"}
        )
        expected[(a, "attribution_events", "raw_payload", rid)] = {"$.context.customer.Email"}
        rid = await insert_ledger(
            conn, a, metadata={"billing": {"address": {"street": "1 Main St", "zip": "90210"}}}
        )
        # A personal key's whole subtree is one finding.
        expected[(a, "revenue_ledger", "metadata", rid)] = {"$.billing.address"}
        clean.append(
            await insert_event(
                conn, a, raw_payload={"utm": {"source": "google"}, "name": "Spring sale"}
            )
        )
    async with tenant_transaction(owner_pool, b) as conn:
        rid = await insert_dead_event(
            conn,
            b,
            raw_payload={
                "items": [{"sku": "1"}, {"shipping": {"phoneNumber": "+44 20 7946 0958"}}],
                "client": {"ip-address": "10.1.2.3", "first_name": "Ada Lovelace"},
            },
        )
        expected[(b, "dead_events", "raw_payload", rid)] = {
            "$.items[1].shipping.phoneNumber",
            "$.client.ip-address",
            "$.client.first_name",
        }
        rid = await insert_event(conn, b, raw_payload={"user": {"contactEmail": "a@b.c"}})
        expected[(b, "attribution_events", "raw_payload", rid)] = {"$.user.contactEmail"}
        clean.append(await insert_dead_event(conn, b, raw_payload={"campaign": {"id": 7}}))
        clean.append(await insert_ledger(conn, b, metadata={"order": {"total": 5}}))

    record_ids = [key[3] for key in expected] + clean
    total_expected = sum(len(paths) for paths in expected.values())

    # As the application role, with no tenant set: the definer function still sees every tenant.
    async with transaction(app_pool) as conn:
        assert await conn.fetchval("SELECT current_user") == "llm_app"
        first = await conn.fetchval("SELECT fn_scan_pii_contamination()")
    # Other tests may have left PII behind too: at least ours were found.
    assert first >= total_expected

    async with owner_pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT tenant_id, table_name, column_name, record_id, detected_key, redacted_snippet,"
            " source, finding_kind FROM pii_audit_findings WHERE record_id = ANY($1::uuid[])",
            record_ids,
        )
    found: dict[tuple[UUID, str, str, UUID], set[str]] = {}
    for r in rows:
        found.setdefault(
            (r["tenant_id"], r["table_name"], r["column_name"], r["record_id"]), set()
        ).add(r["detected_key"])
        assert (r["source"], r["finding_kind"]) == ("scan", "personal_key")
        snippet = r["redacted_snippet"] or ""
        leaked = [v for v in RAW_VALUES if v in snippet]
        assert not leaked, f"redacted_snippet {snippet!r} holds raw values {leaked}"
    assert found == expected
    assert len(rows) == total_expected

    # Each tenant, as the application role, sees exactly its own findings.
    for tenant_id in (a, b):
        async with tenant_transaction(app_pool, tenant_id, readonly=True) as conn:
            mine = await conn.fetch(
                "SELECT tenant_id, record_id FROM pii_audit_findings"
                " WHERE record_id = ANY($1::uuid[])",
                record_ids,
            )
        assert {r["tenant_id"] for r in mine} == {tenant_id}
        assert len(mine) == sum(len(p) for k, p in expected.items() if k[0] == tenant_id)

    # A second run finds nothing new and adds no rows.
    async with owner_pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM pii_audit_findings")
    async with transaction(app_pool) as conn:
        assert await conn.fetchval("SELECT fn_scan_pii_contamination()") == 0
    async with owner_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pii_audit_findings") == before


async def test_app_role_cannot_read_other_tables_through_the_scan_role(
    app_pool: asyncpg.Pool,
) -> None:
    async with transaction(app_pool) as conn:
        assert await conn.fetchval("SELECT pg_has_role('llm_crosstenant', 'MEMBER')") is False
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await conn.execute("SET ROLE llm_crosstenant")


# --------------------------------------------------------------------------------------------
# The SQL key list and normalisation mirror the Python guard
# --------------------------------------------------------------------------------------------


async def test_sql_personal_key_list_equals_python_personal_keys(app_pool: asyncpg.Pool) -> None:
    async with app_pool.acquire() as conn:
        definition = await conn.fetchval(
            "SELECT pg_get_functiondef('fn_is_personal_key(text)'::regprocedure)"
        )
        array = re.search(r"ARRAY\[(.*?)\]", definition, re.S)
        assert array is not None, definition
        sql_keys = set(re.findall(r"'([^']*)'", array.group(1)))
        verdicts = await conn.fetch(
            "SELECT k, fn_is_personal_key(k) AS personal FROM unnest($1::text[]) AS k",
            sorted(PERSONAL_KEYS),
        )
    assert sql_keys - PERSONAL_KEYS == set(), "keys only in SQL"
    assert PERSONAL_KEYS - sql_keys == set(), "keys only in Python"
    assert [r["k"] for r in verdicts if not r["personal"]] == []


@pytest.mark.parametrize("key", ["name", "user_agent", "campaign", "gender", "password", "utm"])
async def test_non_personal_keys_are_not_flagged_in_sql(app_pool: asyncpg.Pool, key: str) -> None:
    async with app_pool.acquire() as conn:
        assert await conn.fetchval("SELECT fn_is_personal_key($1)", key) is False
    assert normalize_key(key) not in PERSONAL_KEYS


TRICKY_KEYS = [
    # camelCase and PascalCase
    "firstName",
    "FirstName",
    "dateOfBirth",
    "phoneNumber",
    "contactEmail",
    # kebab-case, spaces, dots, mixed separators
    "first-name",
    "First Name",
    "X-Forwarded-For",
    "cc.number",
    "e-mail",
    "e__mail",
    "E_Mail",
    # leading/trailing separators and whitespace
    "  email  ",
    "__email__",
    "-phone-",
    "Email\t",
    "email\n",
    # digits
    "address_line1",
    "addressLine1",
    "AddressLine_1",
    "address line 1",
    "address1",
    "Address2",
    "ipv4",
    "ipV4",
    "phoneNumber2",
    # all caps and acronyms
    "SSN",
    "DOB",
    "IPV6",
    "X_REAL_IP",
    "customerIP",
    "userIP",
    "IPAddress",
    "ZIPCode",
    "userIPAddress",
    "HTTPServer",
    "IPv4",
    "ABc",
]


@pytest.mark.parametrize("key", TRICKY_KEYS)
async def test_sql_key_normalisation_agrees_with_python(app_pool: asyncpg.Pool, key: str) -> None:
    async with app_pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT fn_normalize_json_key($1) AS normalised, fn_is_personal_key($1) AS personal",
            key,
        )
    assert row is not None
    python = normalize_key(key)
    assert (row["normalised"], row["personal"]) == (python, python in PERSONAL_KEYS), (
        f"DEFECT: SQL fn_normalize_json_key({key!r}) = {row['normalised']!r} "
        f"but Python normalize_key = {python!r}"
    )


# Common spellings of personal keys a payload is likely to carry: both guards must flag them.
COMMON_SPELLINGS = ["IPAddress", "ZIPCode", "IPv4", "IPv6", "ipAddress", "SSN", "eMail"]


@pytest.mark.parametrize("key", COMMON_SPELLINGS)
async def test_common_spellings_of_personal_keys_are_personal_in_python_and_sql(
    app_pool: asyncpg.Pool, key: str
) -> None:
    async with app_pool.acquire() as conn:
        sql_personal = await conn.fetchval("SELECT fn_is_personal_key($1)", key)
    verdicts: dict[str, Any] = {
        "python": normalize_key(key) in PERSONAL_KEYS,
        "sql": sql_personal,
    }
    assert verdicts == {"python": True, "sql": True}, (
        f"DEFECT: {key!r} is not recognised as personal: {verdicts} "
        f"(python normalises to {normalize_key(key)!r})"
    )
