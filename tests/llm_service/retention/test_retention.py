"""`llm-service retention`: exactly what is past its age goes, nothing else, while calls go on."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from llm_service.costs.ledger_repository import reserve_call, settle_call
from llm_service.costs.reconcile import reconcile
from llm_service.db.pool import tenant_transaction
from llm_service.retention.service import run_retention
from llm_service.tenants.service import create_tenant
from tests.helpers.cli import RunCli

DAYS = 30
MONEY_COLUMNS = (
    "status",
    "cost_cents",
    "reserved_cents",
    "cost_is_estimate",
    "input_tokens",
    "output_tokens",
    "model",
    "endpoint",
    "started_at",
    "settled_at",
)


def _prompt(tag: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"why did revenue drop? ({tag})"}]}


async def _call(
    app_pool: asyncpg.Pool, tenant_id: UUID, tag: str, *, with_prompt: bool = True
) -> UUID:
    """One call through the ledger, as the gateway records it (prompt in request_metadata)."""
    metadata: dict[str, Any] = {"input_tokens_estimate": 12}
    if with_prompt:
        metadata["prompt"] = _prompt(tag)
    async with tenant_transaction(app_pool, tenant_id) as conn:
        reservation = await reserve_call(
            conn,
            tenant_id=tenant_id,
            endpoint="explanations" if with_prompt else "embeddings",
            model="openai/gpt-4o-mini",
            provider="openai",
            worst_case_usd=Decimal("0.0002"),
            lease_seconds=60,
            request_metadata=metadata,
        )
    async with tenant_transaction(app_pool, tenant_id) as conn:
        assert await settle_call(
            conn,
            reservation,
            status="succeeded",
            cost_usd=Decimal("0.00000015") * (1 + len(tag)),
            input_tokens=1 + len(tag),
            output_tokens=len(tag),
        )
    return reservation.call_id


async def _age(
    owner_pool: asyncpg.Pool, tenant_id: UUID, table: str, row_id: UUID, age: timedelta
) -> None:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        status = await conn.execute(
            f"UPDATE {table} SET created_at = now() - $2::interval WHERE id = $1", row_id, age
        )
        assert status == "UPDATE 1"


async def _validation_failure(owner_pool: asyncpg.Pool, tenant_id: UUID, tag: str) -> UUID:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        failure_id: UUID = await conn.fetchval(
            """INSERT INTO llm_validation_failures (tenant_id, endpoint, model, validation_error,
                   request_payload, response_payload)
               VALUES ($1, 'explanations', 'gpt-4o-mini', 'missing citations', $2, $3)
               RETURNING id""",
            tenant_id,
            _prompt(tag),
            f"not json ({tag})",
        )
    return failure_id


async def _cache_entry(owner_pool: asyncpg.Pool, tenant_id: UUID, expires_in: timedelta) -> UUID:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        entry_id: UUID = await conn.fetchval(
            """INSERT INTO explanation_cache (tenant_id, entity_type, scope_key, scope,
                   embedding_model, embedding_dim, explanation, model, prompt_version,
                   data_fingerprint, expires_at)
               VALUES ($1, 'channel', repeat('b', 64), '{}'::jsonb, 'test/model', 3,
                       '{"text": "ok"}'::jsonb, 'gpt-4o-mini', 'v1', 'fp', now() + $2::interval)
               RETURNING id""",
            tenant_id,
            expires_in,
        )
    return entry_id


async def _tool_call(owner_pool: asyncpg.Pool, tenant_id: UUID) -> UUID:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        investigation_id = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question) VALUES ($1, 'why?') RETURNING id",
            tenant_id,
        )
        tool_call_id: UUID = await conn.fetchval(
            """INSERT INTO investigation_tool_calls (tenant_id, investigation_id, tool_name,
                   output, created_at)
               VALUES ($1, $2, 'channel_performance', '{"rows": [1, 2]}'::jsonb,
                       now() - interval '90 days') RETURNING id""",
            tenant_id,
            investigation_id,
        )
    return tool_call_id


async def _rows(
    owner_pool: asyncpg.Pool, tenant_id: UUID, table: str, ids: list[UUID]
) -> dict[UUID, dict[str, Any]]:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        rows = await conn.fetch(f"SELECT * FROM {table} WHERE id = ANY($1::uuid[])", ids)
    return {r["id"]: dict(r) for r in rows}


async def _monthly(owner_pool: asyncpg.Pool, tenant_id: UUID) -> list[dict[str, Any]]:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT * FROM llm_monthly_costs WHERE tenant_id = $1 ORDER BY month", tenant_id
        )
    return [{k: v for k, v in r.items() if k != "updated_at"} for r in rows]


async def test_retention_purges_exactly_what_is_past_its_age_while_calls_continue(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, run_cli: RunCli
) -> None:
    tenants = [
        (await create_tenant(owner_pool, f"retention-{i}-{uuid.uuid4().hex[:6]}")).tenant_id
        for i in range(2)
    ]
    old_age = timedelta(days=DAYS, hours=1)
    young_ages = (timedelta(days=DAYS - 1, hours=23), timedelta(days=3), timedelta(0))
    old_calls: dict[UUID, UUID] = {}  # call -> tenant
    young_calls: dict[UUID, UUID] = {}
    old_failures: dict[UUID, UUID] = {}
    young_failures: dict[UUID, UUID] = {}
    expired: dict[UUID, UUID] = {}
    live: dict[UUID, UUID] = {}
    tool_calls: dict[UUID, UUID] = {}
    for t in tenants:
        for i in range(7):
            call = await _call(app_pool, t, f"old-{i}")
            await _age(owner_pool, t, "llm_api_calls", call, old_age + timedelta(days=i))
            old_calls[call] = t
            failure = await _validation_failure(owner_pool, t, f"old-{i}")
            await _age(owner_pool, t, "llm_validation_failures", failure, old_age)
            old_failures[failure] = t
        for age in young_ages:
            call = await _call(app_pool, t, "young")
            await _age(owner_pool, t, "llm_api_calls", call, age)
            young_calls[call] = t
            failure = await _validation_failure(owner_pool, t, "young")
            await _age(owner_pool, t, "llm_validation_failures", failure, age)
            young_failures[failure] = t
        # An old call with nothing to purge is left exactly as it is.
        bare = await _call(app_pool, t, "bare", with_prompt=False)
        await _age(owner_pool, t, "llm_api_calls", bare, old_age)
        young_calls[bare] = t
        for _ in range(3):
            expired[await _cache_entry(owner_pool, t, timedelta(seconds=-5))] = t
        live[await _cache_entry(owner_pool, t, timedelta(hours=1))] = t
        tool_calls[await _tool_call(owner_pool, t)] = t

    async def snapshot(table: str, ids: dict[UUID, UUID]) -> dict[UUID, dict[str, Any]]:
        out: dict[UUID, dict[str, Any]] = {}
        for t in tenants:
            out |= await _rows(owner_pool, t, table, [i for i, owner in ids.items() if owner == t])
        return out

    calls_before = await snapshot("llm_api_calls", old_calls | young_calls)
    failures_before = await snapshot("llm_validation_failures", old_failures | young_failures)
    tools_before = await snapshot("investigation_tool_calls", tool_calls)
    monthly_before = {t: await _monthly(owner_pool, t) for t in tenants}

    # Requests keep coming while retention runs (small batches, so they interleave).
    stop = asyncio.Event()
    during: dict[UUID, UUID] = {}

    async def keep_calling(t: UUID) -> None:
        n = 0
        while not stop.is_set() or n < 3:
            during[await _call(app_pool, t, f"during-{n}")] = t
            n += 1

    callers = [asyncio.create_task(keep_calling(t)) for t in tenants]
    try:
        code, out = await run_cli("retention", "--prompt-days", str(DAYS), "--batch-size", "3")
    finally:
        stop.set()
        await asyncio.gather(*callers)
    assert code == 0, out
    counts = dict(
        line.rsplit(": ", 1) for line in out.splitlines() if ": " in line and "cutoff" not in line
    )
    assert int(counts["llm_api_calls prompts purged"]) >= len(old_calls)
    assert int(counts["llm_validation_failures payloads purged"]) >= len(old_failures)
    assert int(counts["expired explanation_cache entries deleted"]) >= len(expired)
    assert int(counts["batches"]) >= len(old_calls) // 3

    # Old calls: the prompt is gone, the other metadata and every money fact are as they were.
    calls_after = await snapshot("llm_api_calls", old_calls | young_calls)
    for call_id in old_calls:
        before, after = calls_before[call_id], calls_after[call_id]
        assert "prompt" in before["request_metadata"]
        assert after["request_metadata"] == {"input_tokens_estimate": 12, "purged": True}
        assert {c: after[c] for c in MONEY_COLUMNS} == {c: before[c] for c in MONEY_COLUMNS}
        assert {k: v for k, v in after.items() if k != "request_metadata"} == {
            k: v for k, v in before.items() if k != "request_metadata"
        }
    # Young calls (and an old one without a prompt) are untouched, column for column.
    for call_id in young_calls:
        assert calls_after[call_id] == calls_before[call_id]
    # Calls made while retention ran keep their prompts.
    during_after = await snapshot("llm_api_calls", during)
    assert len(during_after) == len(during) >= 6
    assert all("prompt" in row["request_metadata"] for row in during_after.values())

    failures_after = await snapshot("llm_validation_failures", old_failures | young_failures)
    for failure_id in old_failures:
        after, before = failures_after[failure_id], failures_before[failure_id]
        assert after["request_payload"] is None and after["response_payload"] is None
        assert after["validation_error"] == before["validation_error"]
        assert after["created_at"] == before["created_at"]
    for failure_id in young_failures:
        assert failures_after[failure_id] == failures_before[failure_id]

    cache_left = await snapshot("explanation_cache", expired | live)
    assert set(cache_left) == set(live)
    # Tool call outputs are evidence for findings: retention keeps them (see llm_service.retention).
    assert await snapshot("investigation_tool_calls", tool_calls) == tools_before

    # The money did not move: the monthly rows only grew by the calls made meanwhile, and the
    # ledger still reconciles with no difference for these tenants.
    for t in tenants:
        after_rows = await _monthly(owner_pool, t)
        assert len(after_rows) == len(monthly_before[t]) == 1
        made = [c for c, owner in during.items() if owner == t]
        grown = sum((row["cost_cents"] for c, row in during_after.items() if c in made), Decimal(0))
        assert after_rows[0]["total_cost_cents"] == monthly_before[t][0]["total_cost_cents"] + grown
        assert after_rows[0]["total_calls"] == monthly_before[t][0]["total_calls"] + len(made)
    async with app_pool.acquire() as conn, conn.transaction():
        report = await reconcile(conn, datetime.now(UTC).date().replace(day=1))
    mine = [row for row in report.rows if row.tenant_id in tenants]
    assert len(mine) == len(tenants)
    assert all(row.matches for row in mine)

    # A second run finds nothing more of these tenants to purge.
    code, out = await run_cli("retention", "--prompt-days", str(DAYS))
    assert code == 0
    assert await snapshot("llm_api_calls", old_calls | young_calls) == calls_after


async def test_batches_are_bounded_and_the_cutoff_is_guarded(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool
) -> None:
    async with app_pool.acquire() as conn:
        for function in ("fn_purge_llm_call_prompts", "fn_purge_llm_validation_payloads"):
            # An operator's purge across tenants: not the application role's to run.
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval(f"SELECT {function}(now() - interval '30 days', 10)")
    async with owner_pool.acquire() as conn:
        for function in ("fn_purge_llm_call_prompts", "fn_purge_llm_validation_payloads"):
            with pytest.raises(asyncpg.InvalidParameterValueError, match="at least a day"):
                await conn.fetchval(f"SELECT {function}(now() - interval '2 hours', 10)")
            with pytest.raises(asyncpg.InvalidParameterValueError, match="batch size"):
                await conn.fetchval(f"SELECT {function}(now() - interval '30 days', 0)")
            privileges = await conn.fetchrow(
                """SELECT p.prosecdef, pg_get_userbyid(p.proowner) AS owner,
                          has_function_privilege('public', p.oid, 'EXECUTE') AS public_can
                   FROM pg_proc p WHERE p.proname = $1""",
                function,
            )
            assert tuple(privileges) == (True, "llm_crosstenant", False)
        with pytest.raises(RuntimeError, match="outside a transaction"):
            async with conn.transaction():
                await run_retention(conn, prompt_days=30, batch_size=10)


async def test_cli_refuses_a_retention_under_one_day(run_cli: RunCli) -> None:
    code, _ = await run_cli("retention", "--prompt-days", "0")
    assert code == 2
