"""The incremental PII scan under attack: late commits, rows written during a scan, nested and
hostile JSON, updates that add personal data later, concurrent scans, huge backlogs, forged
trigger use. Every scan here runs as the application role, as the service would."""

from __future__ import annotations

import asyncio
import difflib
import json
import uuid
from collections.abc import Callable
from typing import Any
from uuid import UUID

import asyncpg
import psycopg
import pytest
from tenant_rows import insert_dead_event, insert_event, insert_ledger

from llm_service.db import migrate
from llm_service.db.pool import tenant_transaction, transaction
from llm_service.db.queries import set_tenant
from llm_service.db.schema_dump import dump_schema
from llm_service.db.urls import DatabaseUrls
from llm_service.pii.scan import drain, scan_batch
from llm_service.tenants.service import CreatedTenant, create_tenant


async def _tenant(owner_pool: asyncpg.Pool) -> UUID:
    return (await create_tenant(owner_pool, f"pii-inc-{uuid.uuid4().hex[:8]}")).tenant_id


async def _findings(owner_pool: asyncpg.Pool, record_id: UUID) -> list[str]:
    async with owner_pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT detected_key FROM pii_audit_findings WHERE record_id = $1 AND source = 'scan'",
            record_id,
        )
    return sorted(r["detected_key"] for r in rows)


async def _queued(owner_pool: asyncpg.Pool, record_id: UUID) -> int:
    async with owner_pool.acquire() as conn:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM pii_scan_queue WHERE record_id = $1", record_id
        )
    return n


async def _scan_all(app_pool: asyncpg.Pool) -> int:
    async with app_pool.acquire() as conn:
        report = await drain(conn, batch_size=1000)
    return report.findings


@pytest.fixture
async def drained(app_pool: asyncpg.Pool) -> None:
    """Whatever other tests queued is scanned first, so batch counts below are this test's."""
    await _scan_all(app_pool)


# --------------------------------------------------------------------------------------------
# Nothing is missed
# --------------------------------------------------------------------------------------------


async def test_a_row_committed_after_a_later_one_is_still_scanned(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, drained: None
) -> None:
    """A serial or created_at watermark would move past the early row while it is uncommitted."""
    # Two tenants: one tenant's writes on one day queue behind each other on the journal.
    tenant, other = await _tenant(owner_pool), await _tenant(owner_pool)
    async with owner_pool.acquire() as early_conn:
        early_tx = early_conn.transaction()
        await early_tx.start()
        await set_tenant(early_conn, tenant)
        early = await insert_event(early_conn, tenant, raw_payload={"customer": {"email": "x"}})
        # A later transaction writes and commits first; a scan runs in between.
        async with tenant_transaction(owner_pool, other) as conn:
            late = await insert_event(conn, other, raw_payload={"customer": {"phone": "1"}})
        assert await _scan_all(app_pool) >= 1
        assert await _findings(owner_pool, late) == ["$.customer.phone"]
        assert await _findings(owner_pool, early) == []
        await early_tx.commit()
    assert await _queued(owner_pool, early) == 1
    assert await _scan_all(app_pool) == 1
    assert await _findings(owner_pool, early) == ["$.customer.email"]
    assert await _queued(owner_pool, early) == 0


async def test_a_row_written_while_a_batch_is_open_waits_for_the_next_batch(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, drained: None
) -> None:
    tenant = await _tenant(owner_pool)
    async with tenant_transaction(owner_pool, tenant) as conn:
        first = await insert_dead_event(conn, tenant, raw_payload={"body": {"ssn": "1"}})
    async with app_pool.acquire() as scan_conn, scan_conn.transaction():
        assert (await scan_batch(scan_conn, 1000)).scanned >= 1
        # While the batch is uncommitted, the tenant keeps writing, without waiting for it.
        async with tenant_transaction(owner_pool, tenant) as conn:
            await conn.execute("SET LOCAL lock_timeout = '5s'")
            during = await insert_dead_event(conn, tenant, raw_payload={"body": {"iban": "DE"}})
            await conn.execute(
                "UPDATE dead_events SET raw_payload = $2 WHERE id = $1",
                first,
                {"body": {"ssn": "1", "zip": "9"}},
            )
    assert await _findings(owner_pool, first) == ["$.body.ssn"]
    assert await _findings(owner_pool, during) == []
    assert await _scan_all(app_pool) == 2
    assert await _findings(owner_pool, during) == ["$.body.iban"]
    assert await _findings(owner_pool, first) == ["$.body.ssn", "$.body.zip"]


async def test_a_failed_batch_leaves_its_rows_queued(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, drained: None
) -> None:
    tenant = await _tenant(owner_pool)
    async with tenant_transaction(owner_pool, tenant) as conn:
        rid = await insert_event(conn, tenant, raw_payload={"a": {"email": "x"}})
    async with app_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        assert (await scan_batch(conn, 1000)).findings == 1
        await tx.rollback()
    assert await _queued(owner_pool, rid) == 1
    assert await _findings(owner_pool, rid) == []
    assert await _scan_all(app_pool) == 1
    assert await _findings(owner_pool, rid) == ["$.a.email"]


# --------------------------------------------------------------------------------------------
# Updates
# --------------------------------------------------------------------------------------------


async def test_an_update_that_adds_a_personal_key_later_is_found(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, drained: None
) -> None:
    tenant = await _tenant(owner_pool)
    async with tenant_transaction(owner_pool, tenant) as conn:
        dead = await insert_dead_event(conn, tenant, raw_payload={"body": {"id": 1}})
        ledger = await insert_ledger(conn, tenant, metadata={"order": {"total": 5}})
    assert await _scan_all(app_pool) == 0
    async with tenant_transaction(app_pool, tenant) as conn:
        await conn.execute(
            "UPDATE dead_events SET raw_payload = jsonb_set(raw_payload, '{body,customer}',"
            ' \'{"Email": "a@b.c"}\') WHERE id = $1',
            dead,
        )
        await conn.execute(
            'UPDATE revenue_ledger SET metadata = metadata || \'{"shipping": [{"zipCode": 1}]}\''
            " WHERE id = $1",
            ledger,
        )
    assert await _scan_all(app_pool) == 2
    assert await _findings(owner_pool, dead) == ["$.body.customer.Email"]
    assert await _findings(owner_pool, ledger) == ["$.shipping[0].zipCode"]


async def test_updates_that_leave_the_json_alone_queue_nothing(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, drained: None
) -> None:
    tenant = await _tenant(owner_pool)
    async with tenant_transaction(owner_pool, tenant) as conn:
        event = await insert_event(conn, tenant, raw_payload={"utm": {"source": "x"}})
        dead = await insert_dead_event(conn, tenant, raw_payload={"body": {"id": 1}})
        ledger = await insert_ledger(conn, tenant, metadata={"order": {"total": 5}})
    await _scan_all(app_pool)
    async with tenant_transaction(owner_pool, tenant) as conn:
        await conn.execute(
            "UPDATE attribution_events SET processing_status = 'processed', processed_at = now()"
            " WHERE id = $1",
            event,
        )
        await conn.execute(
            "UPDATE dead_events SET remediation_status = 'in_progress' WHERE id = $1", dead
        )
        await conn.execute("UPDATE revenue_ledger SET state = 'refunded' WHERE id = $1", ledger)
    assert [await _queued(owner_pool, r) for r in (event, dead, ledger)] == [0, 0, 0]


# --------------------------------------------------------------------------------------------
# Hostile JSON
# --------------------------------------------------------------------------------------------

HOSTILE: list[tuple[dict[str, Any], list[str]]] = [
    # Escapes inside keys and values must not shift the key listing.
    ({"v": 'a": ', ": email": 1}, ["$.: email"]),
    ({"v": "x", "": 1, "e\nmail": 2}, ["$.e\nmail"]),
    (
        {'quote"d': {'"phone"': 1}, "back\\slash": {"ip\\": 2}},
        ["$.back\\slash.ip\\", '$.quote"d."phone"'],
    ),
    ({"t": "\\", "x": {"SSN": 1}}, ["$.x.SSN"]),
    # Values that look like keys are not keys.
    ({"note": '{"email": "a@b.c"}', "list": ["email", "phone: 1"]}, []),
    # Arrays of arrays, non-ASCII around a personal key.
    ({"a": [[{"b": [{"Téléphone": 1, "ipAddress": "10.0.0.1"}]}]]}, ["$.a[0][0].b[0].ipAddress"]),
    # A personal key whose value is itself a document: one finding for the subtree.
    ({"billing_address": {"street": "1 Main", "zip": "9"}}, ["$.billing_address"]),
]


@pytest.mark.parametrize(("payload", "paths"), HOSTILE)
async def test_hostile_json_is_scanned_exactly(
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    payload: dict[str, Any],
    paths: list[str],
) -> None:
    tenant = await _tenant(owner_pool)
    async with tenant_transaction(owner_pool, tenant) as conn:
        rid = await insert_event(conn, tenant, raw_payload=payload)
    await _scan_all(app_pool)
    assert await _findings(owner_pool, rid) == sorted(paths)


async def test_deep_nesting_and_huge_keys_are_scanned_without_failing_the_batch(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, drained: None
) -> None:
    tenant = await _tenant(owner_pool)
    deep = '{"a": ' * 3000 + '{"email": "a@b.c"}' + "}" * 3000  # beyond Python's json recursion
    long_parent = json.dumps({"k" * 5000: {"phone": "1"}})
    padded = json.dumps({"email" + " " * 5000: 1})
    async with tenant_transaction(owner_pool, tenant) as conn:
        ids = [
            await conn.fetchval(
                """INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp,
                       event_type, channel, revenue_cents, raw_payload, idempotency_key)
                   VALUES ($1, now(), now(), 'page_view', 'facebook_paid', 0, $2::text::jsonb,
                           gen_random_uuid()::text) RETURNING id""",
                tenant,
                doc,
            )
            for doc in (deep, long_parent, padded)
        ]
        clean = await insert_event(conn, tenant, raw_payload={"a": {"b": 1}})
    assert await _scan_all(app_pool) == 3
    found = [await _findings(owner_pool, rid) for rid in ids]
    assert all(len(f) == 1 for f in found), found
    # A path too long for the index keeps its head and a digest of the whole; the same each time.
    assert found[0][0].startswith("$" + ".a" * 100) and "#" in found[0][0]
    assert all(len(f[0]) <= 400 for f in found)
    assert await _findings(owner_pool, clean) == []
    async with tenant_transaction(owner_pool, tenant) as conn:
        await conn.execute(
            "INSERT INTO pii_scan_queue (tenant_id, source_table, record_id) "
            "SELECT tenant_id, 'attribution_events', id FROM attribution_events WHERE id = ANY($1)",
            ids,
        )
    assert await _scan_all(app_pool) == 0


# --------------------------------------------------------------------------------------------
# Concurrency and batches
# --------------------------------------------------------------------------------------------


async def test_two_scans_at_once_share_the_work_and_record_each_finding_once(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, drained: None
) -> None:
    tenant = await _tenant(owner_pool)
    async with tenant_transaction(owner_pool, tenant) as conn:
        await conn.execute(
            """INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type,
                   channel, revenue_cents, raw_payload, idempotency_key)
               SELECT $1, now(), now(), 'page_view', 'facebook_paid', 0,
                      jsonb_build_object('user', jsonb_build_object('email', i)), 'two-' || i
                 FROM generate_series(1, 400) AS i""",
            tenant,
        )
    async with app_pool.acquire() as a, app_pool.acquire() as b:
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        # A holds its batch uncommitted; B neither waits for it nor takes the same rows.
        first = await scan_batch(a, 250)
        await b.execute("SET LOCAL lock_timeout = '5s'")
        second = await scan_batch(b, 250)
        await asyncio.gather(ta.commit(), tb.commit())
    assert (first.scanned, second.scanned) == (250, 150)
    assert first.findings + second.findings == 400
    # Queue entries twice over (a replay) still add no finding.
    async with tenant_transaction(owner_pool, tenant) as conn:
        await conn.execute(
            "INSERT INTO pii_scan_queue (tenant_id, source_table, record_id) "
            "SELECT tenant_id, 'attribution_events', id"
            " FROM attribution_events, generate_series(1, 2) WHERE tenant_id = $1",
            tenant,
        )
    async with app_pool.acquire() as a, app_pool.acquire() as b:
        reports = await asyncio.gather(drain(a, batch_size=100), drain(b, batch_size=100))
    assert sum(r.scanned for r in reports) == 800
    assert sum(r.findings for r in reports) == 0
    async with owner_pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pii_audit_findings WHERE tenant_id = $1", tenant
            )
            == 400
        )


async def test_a_huge_backlog_is_scanned_in_bounded_batches(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, drained: None
) -> None:
    tenant = await _tenant(owner_pool)
    rows = 25_000
    async with tenant_transaction(owner_pool, tenant) as conn:
        await conn.execute(
            """INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type,
                   channel, revenue_cents, raw_payload, idempotency_key)
               SELECT $1, now(), now(), 'page_view', 'facebook_paid', 0,
                      CASE WHEN i % 10 = 0
                           THEN jsonb_build_object('ctx', jsonb_build_object('phone', i))
                           ELSE jsonb_build_object('ctx', jsonb_build_object('page', i)) END,
                      'huge-' || i
                 FROM generate_series(1, $2) AS i""",
            tenant,
            rows,
        )
    sizes = []
    async with app_pool.acquire() as conn:
        while (batch := await scan_batch(conn, 2000)).scanned:
            sizes.append(batch.scanned)
    assert max(sizes) == 2000 and sum(sizes) == rows
    async with owner_pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pii_audit_findings WHERE tenant_id = $1", tenant
            )
            == rows // 10
        )


async def test_the_inlinable_key_functions_still_answer_null_for_null(
    app_pool: asyncpg.Pool,
) -> None:
    async with app_pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT fn_normalize_json_key(NULL), fn_is_personal_key(NULL),"
            " (SELECT count(*) FROM fn_jsonb_personal_paths(NULL))"
        )
    assert tuple(row or ()) == (None, None, 0)


@pytest.mark.parametrize("size", [0, -1, 10_001, None])
async def test_a_batch_size_out_of_bounds_is_refused(
    app_pool: asyncpg.Pool, size: int | None
) -> None:
    async with transaction(app_pool) as conn:
        with pytest.raises(asyncpg.InvalidParameterValueError, match="between 1 and 10000"):
            await conn.fetchrow("SELECT * FROM fn_pii_scan_batch($1)", size)


# --------------------------------------------------------------------------------------------
# The queue cannot be forged or read across tenants
# --------------------------------------------------------------------------------------------


async def test_the_app_role_cannot_write_the_queue_or_borrow_its_trigger(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    for statement in (
        "INSERT INTO pii_scan_queue (tenant_id, source_table, record_id)"
        " VALUES (current_setting('app.current_tenant_id')::uuid, 'dead_events',"
        " gen_random_uuid())",
        "DELETE FROM pii_scan_queue",
        "UPDATE pii_scan_queue SET record_id = gen_random_uuid()",
    ):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    async with transaction(app_pool) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "CREATE TEMP TABLE forged (LIKE dead_events);"
                " CREATE TRIGGER t AFTER INSERT ON forged REFERENCING NEW TABLE AS new_rows"
                " FOR EACH STATEMENT EXECUTE FUNCTION public.fn_pii_queue_dead_events()"
            )


async def test_a_queue_trigger_attached_to_another_table_refuses_to_run(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with owner_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "CREATE TEMP TABLE forged (LIKE dead_events INCLUDING DEFAULTS);"
            " CREATE TRIGGER t AFTER INSERT ON forged REFERENCING NEW TABLE AS new_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION public.fn_pii_queue_dead_events()"
        )
        with pytest.raises(
            asyncpg.InsufficientPrivilegeError, match=r"belongs to public\.dead_events"
        ):
            await conn.execute(
                "INSERT INTO forged (tenant_id, source, error_type, error_message, raw_payload)"
                " VALUES ($1, 's', 'e', 'm', '{\"a\": {\"b\": 1}}')",
                tenant.tenant_id,
            )
        await tx.rollback()


# --------------------------------------------------------------------------------------------
# The migration
# --------------------------------------------------------------------------------------------


def test_downgrade_of_005_restores_004_exactly_and_upgrade_queues_the_backlog(
    scratch_database: Callable[[str], DatabaseUrls],
) -> None:
    urls = scratch_database("pii005")
    migrate.upgrade(urls.owner, "004_llm_subsystem")
    with psycopg.connect(urls.owner, autocommit=True) as conn:
        at_004 = dump_schema(conn)
        tenant = conn.execute(
            "INSERT INTO tenants (name, api_key_hash)"
            " VALUES ('t', encode(sha256('t'), 'hex')) RETURNING id"
        ).fetchone()
        assert tenant is not None
        conn.execute(
            """INSERT INTO dead_events (tenant_id, source, error_type, error_message, raw_payload)
               VALUES (%s, 's', 'e', 'm', '{"body": {"email": "x"}}'),
                      (%s, 's', 'e', 'm', '{}')""",
            (tenant[0], tenant[0]),
        )
    migrate.upgrade(urls.owner)
    with psycopg.connect(urls.owner, autocommit=True) as conn:
        # Rows written before 005 are its first backlog (the empty document needs no scan).
        assert conn.execute("SELECT count(*) FROM pii_scan_queue").fetchone() == (1,)
        assert conn.execute("SELECT fn_scan_pii_contamination()").fetchone() == (1,)
    migrate.downgrade(urls.owner, "004_llm_subsystem")
    with psycopg.connect(urls.owner, autocommit=True) as conn:
        after = dump_schema(conn)
    assert after == at_004, "\n".join(
        difflib.unified_diff(
            at_004.splitlines(), after.splitlines(), "004", "005 down", lineterm=""
        )
    )
