"""`llm-service pii-scan` and its service: batch by batch as the application role, bounded, and
built on definer functions that only the roles meant to may run."""

from __future__ import annotations

import re
import uuid

import asyncpg
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.errors import InvalidRequest
from llm_service.pii.scan import drain
from llm_service.tenants.service import create_tenant
from tests.helpers.cli import RunCli


async def test_cli_scans_the_backlog_in_batches_and_then_finds_nothing_new(
    owner_pool: asyncpg.Pool, run_cli: RunCli
) -> None:
    tenant = (await create_tenant(owner_pool, f"pii-cli-{uuid.uuid4().hex[:8]}")).tenant_id
    async with tenant_transaction(owner_pool, tenant) as conn:
        await conn.execute(
            """INSERT INTO dead_events (tenant_id, source, error_type, error_message, raw_payload)
               SELECT $1, 'webhook', 'E', 'm', jsonb_build_object('body',
                      jsonb_build_object('customer', jsonb_build_object('email', i)))
                 FROM generate_series(1, 120) AS i""",
            tenant,
        )
    code, out = await run_cli("pii-scan", "--batch-size", "50")
    assert code == 0, out
    scanned = int(re.search(r"rows scanned: (\d+)", out).group(1))  # type: ignore[union-attr]
    batches = int(re.search(r"batches: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert scanned >= 120 and batches >= 3
    async with owner_pool.acquire() as conn:
        found = await conn.fetchval(
            "SELECT count(*) FROM pii_audit_findings WHERE tenant_id = $1"
            " AND detected_key = '$.body.customer.email'",
            tenant,
        )
    assert found == 120
    code, out = await run_cli("pii-scan")
    assert (code, out) == (0, "rows scanned: 0\nfindings added: 0\nbatches: 1\n")


async def test_cli_refuses_a_batch_size_out_of_bounds(run_cli: RunCli) -> None:
    for size in ("0", "10001"):
        code, _ = await run_cli("pii-scan", "--batch-size", size)
        assert code == 2


async def test_drain_commits_batch_by_batch_so_it_refuses_a_transaction(
    app_pool: asyncpg.Pool,
) -> None:
    async with app_pool.acquire() as conn:
        with pytest.raises(InvalidRequest, match="between 1 and 10000"):
            await drain(conn, batch_size=0)
        with pytest.raises(RuntimeError, match="outside"):
            async with conn.transaction():
                await drain(conn)


@pytest.mark.parametrize(
    ("signature", "app_may_run"),
    [
        ("fn_pii_scan_batch(integer, bigint)", True),
        ("fn_scan_pii_contamination()", True),
        ("fn_pii_queue_attribution_events()", False),
        ("fn_pii_queue_dead_events()", False),
        ("fn_pii_queue_revenue_ledger()", False),
    ],
)
async def test_scan_functions_are_narrow_definers(
    app_pool: asyncpg.Pool, signature: str, app_may_run: bool
) -> None:
    async with app_pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT p.prosecdef, pg_get_userbyid(p.proowner) AS owner, p.proconfig,
                      has_function_privilege('public', p.oid, 'EXECUTE') AS public_may,
                      has_function_privilege('llm_app', p.oid, 'EXECUTE') AS app_may
                 FROM pg_proc p WHERE p.oid = $1::regprocedure""",
            signature,
        )
    assert row is not None
    assert (row["prosecdef"], row["owner"]) == (True, "llm_crosstenant")
    assert "search_path=pg_catalog, public, pg_temp" in row["proconfig"]
    assert (row["public_may"], row["app_may"]) == (False, app_may_run)
