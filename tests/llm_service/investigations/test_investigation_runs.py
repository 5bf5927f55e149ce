"""Investigations end to end: a scripted model (OpenAI wire format, respx), real tools and DB."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import respx
from claimed_runs import claim_of, queue_claimed_run

from budgets.money import cents_to_usd
from llm_service.db.pool import tenant_transaction
from llm_service.demo_data import generate_demo_data
from llm_service.investigations import repository as investigation_repository
from llm_service.investigations.runner import InvestigationRunner
from llm_service.llm.pricing import gateway_from_settings
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from llm_service.tools.headline import money
from tests.helpers.scripted_provider import (
    OPENAI_URL,
    completion_body,
    final_answer,
    reply,
    scripted,
    tool_call_message,
)
from tests.helpers.stall import Stalled
from tests.helpers.waiting import wait_until

QUESTION = "Why did paid social revenue fall in the last 14 days?"


@pytest.fixture(scope="module")
async def data_tenant(owner_pool: asyncpg.Pool) -> CreatedTenant:
    """One tenant with realistic data, shared by this module's runs (each run is its own row)."""
    created = await create_tenant(owner_pool, "investigated")
    async with tenant_transaction(owner_pool, created.tenant_id) as conn:
        await generate_demo_data(conn, created.tenant_id, events=10_000, seed=3)
    return created


async def queue_run(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    *,
    max_cost_cents: Decimal = Decimal(30),
    timeout_ms: int = 60_000,
    max_steps: int = 8,
) -> UUID:
    """Queue a run and claim it for the test's worker (not through the shared queue)."""
    return await queue_claimed_run(
        pool,
        tenant_id,
        QUESTION,
        max_cost_cents=max_cost_cents,
        timeout_ms=timeout_ms,
        max_steps=max_steps,
    )


async def load(pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> dict[str, Any]:
    async with tenant_transaction(pool, tenant_id) as conn:
        run = dict(await conn.fetchrow("SELECT * FROM investigations WHERE id = $1", run_id))
        run["tool_calls"] = [
            dict(r)
            for r in await conn.fetch(
                "SELECT * FROM investigation_tool_calls WHERE investigation_id = $1", run_id
            )
        ]
        run["llm_calls"] = [
            dict(r)
            for r in await conn.fetch(
                "SELECT * FROM llm_api_calls WHERE investigation_id = $1", run_id
            )
        ]
        run["events"] = [
            dict(r)
            for r in await conn.fetch(
                "SELECT * FROM investigation_events WHERE investigation_id = $1 ORDER BY seq",
                run_id,
            )
        ]
    return run


async def run(settings: Settings, pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> str:
    runner = InvestigationRunner(pool, gateway_from_settings(settings, pool), "test-worker")
    return await runner.run(claim_of(run_id))


@respx.mock
async def test_scripted_multi_step_run_succeeds_with_cited_findings(
    model_settings: Settings, app_pool: asyncpg.Pool, data_tenant: CreatedTenant
) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 14 * 86400))
    respx.post(OPENAI_URL).mock(
        side_effect=scripted(
            reply(
                tool_call_message(
                    ("channel_performance", {"start": start, "end": today}),
                    ("compare_periods", {"current_start": start, "current_end": today}),
                )
            ),
            reply(
                tool_call_message(
                    ("top_orders", {"start": start, "end": today, "channel": "facebook_paid"})
                )
            ),
            reply(final_answer),
        )
    )
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    status = await run(model_settings, app_pool, data_tenant.tenant_id, run_id)
    assert status == "succeeded"
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    assert record["status"] == "succeeded"
    assert len(record["tool_calls"]) == 3
    assert all(tc["error"] is None for tc in record["tool_calls"])
    tool_ids = {str(tc["id"]) for tc in record["tool_calls"]}
    findings = record["result"]["findings"]
    assert findings and all(set(f["evidence"]) <= tool_ids for f in findings)
    # The run's spend equals the sum of its calls, exactly.
    assert len(record["llm_calls"]) == 3
    assert record["cost_cents"] == sum(c["cost_cents"] for c in record["llm_calls"])
    assert record["cost_cents"] > 0
    assert next(e["event_type"] for e in record["events"]) == "started"
    assert record["events"][-1]["event_type"] == "final"


@respx.mock
async def test_a_model_that_never_stops_is_stopped_at_the_ceiling_with_wrapup_findings(
    model_settings: Settings, app_pool: asyncpg.Pool, data_tenant: CreatedTenant
) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * 86400))

    def greedy(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        granted = body["max_tokens"]
        if body.get("tools"):
            # Always more tools, and always the whole max_tokens, with a big prompt.
            message = tool_call_message(("channel_performance", {"start": start, "end": today}))
        else:
            message = final_answer(request)
        return httpx.Response(200, json=completion_body(message, 20_000, granted))

    respx.post(OPENAI_URL).mock(side_effect=greedy)
    ceiling_cents = Decimal("1.5")  # $0.015
    run_id = await queue_run(
        app_pool, data_tenant.tenant_id, max_cost_cents=ceiling_cents, max_steps=30
    )
    status = await run(model_settings, app_pool, data_tenant.tenant_id, run_id)
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    assert status == "budget_exhausted", record["reason"]
    settled = sum(c["cost_cents"] for c in record["llm_calls"])
    assert settled <= ceiling_cents
    assert record["cost_cents"] == settled
    assert record["result"]["findings"], "a run at its limit still returns what it found"
    assert "needs" in record["reason"] or "left" in record["reason"]


def _late_answer() -> httpx.Response:
    return httpx.Response(200, json=completion_body({"content": "late"}, 10, 10))


@respx.mock
async def test_a_stalled_provider_ends_timed_out_within_the_limit(
    model_settings: Settings, app_pool: asyncpg.Pool, data_tenant: CreatedTenant
) -> None:
    provider = Stalled(30, _late_answer)
    respx.post(OPENAI_URL).mock(side_effect=provider)
    run_id = await queue_run(app_pool, data_tenant.tenant_id, timeout_ms=2000)
    tasks_before = len(asyncio.all_tasks())
    status = await run(model_settings, app_pool, data_tenant.tenant_id, run_id)
    assert status == "timed_out"
    # The 2 s run limit cut the 30 s call off (one loop timer before the other: no race).
    assert provider.arrivals
    assert (provider.cut_off, provider.answered) == (len(provider.arrivals), 0)
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    assert record["llm_calls"], "every started call is in the ledger"
    assert all(c["status"] != "pending" for c in record["llm_calls"])
    assert record["cost_cents"] == sum(c["cost_cents"] for c in record["llm_calls"])

    async def no_task_left() -> bool:  # cancelled tasks finish unwinding; none keeps running
        return len(asyncio.all_tasks()) <= tasks_before

    await wait_until(no_task_left, "no task left running")


@respx.mock
async def test_cancel_while_running_ends_the_run_promptly_with_its_spend(
    model_settings: Settings, app_pool: asyncpg.Pool, data_tenant: CreatedTenant
) -> None:
    provider = Stalled(20, _late_answer)
    respx.post(OPENAI_URL).mock(side_effect=provider)
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    task = asyncio.create_task(run(model_settings, app_pool, data_tenant.tenant_id, run_id))
    await asyncio.wait_for(provider.arrived.wait(), 60)  # a model call is in flight
    async with tenant_transaction(app_pool, data_tenant.tenant_id) as conn:
        assert await investigation_repository.request_cancel(conn, run_id) is not None
    status = await asyncio.wait_for(task, 10)
    assert status == "cancelled"
    # Promptly: the call in flight was cut off, not waited for.
    assert (provider.cut_off, provider.answered) == (1, 0)
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    assert record["llm_calls"] and all(c["status"] == "cancelled" for c in record["llm_calls"])
    assert record["cost_cents"] == sum(c["cost_cents"] for c in record["llm_calls"]) > 0


async def test_without_a_model_a_degraded_run_cites_real_tool_calls(
    test_settings: Settings, app_pool: asyncpg.Pool, data_tenant: CreatedTenant
) -> None:
    assert test_settings.llm_model is None
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    status = await run(test_settings, app_pool, data_tenant.tenant_id, run_id)
    assert status == "succeeded"
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    assert record["degraded"] is True
    assert record["cost_cents"] == 0 and record["llm_calls"] == []
    tool_ids = {str(tc["id"]) for tc in record["tool_calls"]}
    # "Why did paid social revenue fall": the change, and a possible cause (corrections).
    assert {tc["tool_name"] for tc in record["tool_calls"]} >= {
        "compare_periods",
        "channel_corrections",
    }
    findings = record["result"]["findings"]
    assert findings and all(set(f["evidence"]) <= tool_ids for f in findings)
    # The answer comes first, about the family asked for, with its figures.
    first = findings[0]["claim"]
    assert first.startswith("paid social (") and "facebook_paid" in first and "USD" in first
    # The event log writes money as the API does: plain decimals, never "0E-12".
    data = {e["event_type"]: json.loads(e["data"]) if isinstance(e["data"], str) else e["data"]
            for e in record["events"]}  # fmt: skip
    assert data["final"]["cost_usd"] == "0"
    assert data["started"]["limits"]["max_cost_usd"] == "0.3"


async def _revenue_cents(
    pool: asyncpg.Pool, tenant_id: UUID, channels: list[str], start: str, end: str
) -> int:
    async with tenant_transaction(pool, tenant_id) as conn:
        total = await conn.fetchval(
            "SELECT coalesce(sum(revenue_cents), 0) FROM attribution_events "
            "WHERE channel = ANY($1) AND occurred_at >= $2::date AND occurred_at < $3::date",
            channels,
            date.fromisoformat(start),
            date.fromisoformat(end),
        )
    return int(total)


@pytest.mark.parametrize(
    ("question", "family"),
    [
        ("Why did paid social revenue fall last week?", "paid_social"),
        ("Why did paid search revenue fall last week?", "paid_search"),
    ],
)
async def test_a_familys_figures_are_the_sum_over_every_channel_of_it(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    data_tenant: CreatedTenant,
    question: str,
    family: str,
) -> None:
    """A new user's question: the family's revenue in both periods and its typical week are the
    database's sums over ALL its channels (the tool's answer, cut to its size cap, once dropped
    some of them and the finding summed what was left)."""
    async with tenant_transaction(app_pool, data_tenant.tenant_id) as conn:
        channels = [
            r["code"]
            for r in await conn.fetch(
                "SELECT code FROM channel_taxonomy WHERE family = $1 ORDER BY code", family
            )
        ]
    assert len(channels) > 1
    run_id = await queue_claimed_run(app_pool, data_tenant.tenant_id, question, max_steps=8)
    assert await run(test_settings, app_pool, data_tenant.tenant_id, run_id) == "succeeded"
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    compares = [t for t in record["tool_calls"] if t["tool_name"] == "compare_periods"]
    assert compares
    params = [
        p if isinstance(p, dict) else json.loads(p) for p in (t["input_params"] for t in compares)
    ]
    for p, t in zip(params, compares, strict=True):
        assert sorted(p["channels"].split(",")) == channels  # the family's rows only
        output = t["output"] if isinstance(t["output"], dict) else json.loads(t["output"])
        assert not output.get("truncated")
    answer, typical = params[0], params[1]
    tenant_id = data_tenant.tenant_id
    cur, prev, base = [
        await _revenue_cents(app_pool, tenant_id, channels, p[f"{w}_start"], p[f"{w}_end"])
        for p, w in ((answer, "current"), (answer, "previous"), (typical, "previous"))
    ]
    claim = record["result"]["findings"][0]["claim"]
    assert f"from {money(prev)} USD to {money(cur)} USD" in claim, claim
    assert f"the 4 weeks before averaged {money(base / 4)} USD" in claim, claim


@respx.mock
async def test_citations_to_unknown_tool_calls_are_repaired_once_then_quarantined(
    model_settings: Settings, app_pool: asyncpg.Pool, data_tenant: CreatedTenant
) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    bogus = {
        "content": json.dumps(
            {
                "summary": "s",
                "findings": [
                    {"claim": "made up", "evidence": ["00000000-0000-0000-0000-000000000000"]}
                ],
            }
        )
    }
    respx.post(OPENAI_URL).mock(
        side_effect=scripted(
            reply(
                tool_call_message(("channel_performance", {"start": "2026-01-01", "end": today}))
            ),
            reply(bogus),
            reply(final_answer),
        )
    )
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    status = await run(model_settings, app_pool, data_tenant.tenant_id, run_id)
    assert status == "succeeded"
    async with tenant_transaction(app_pool, data_tenant.tenant_id) as conn:
        quarantined = await conn.fetch(
            "SELECT validation_error FROM llm_validation_failures WHERE endpoint = 'investigations'"
        )
    assert any("do not exist" in q["validation_error"] for q in quarantined)


async def test_cost_is_reported_in_exact_usd(app_pool: asyncpg.Pool) -> None:
    assert cents_to_usd(Decimal("0.0000150000")) == Decimal("1.5E-7")


@respx.mock
async def test_personal_data_in_the_tenants_data_never_reaches_the_provider(
    model_settings: Settings, app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool
) -> None:
    secret_email = "jane.doe.private@example.org"
    created = await create_tenant(owner_pool, "pii-holder")
    async with tenant_transaction(owner_pool, created.tenant_id) as conn:
        await conn.execute(
            """
            INSERT INTO channel_assignment_corrections (tenant_id, entity_type, entity_id,
                from_channel, to_channel, corrected_by, reason, corrected_at)
            VALUES ($1, 'event', gen_random_uuid(), 'organic_social', 'instagram_paid', $2, $3,
                    now() - interval '1 day')
            """,
            created.tenant_id,
            secret_email,
            f"customer {secret_email} complained; call +44 20 7946 0958",
        )
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * 86400))
    route = respx.post(OPENAI_URL).mock(
        side_effect=scripted(
            reply(tool_call_message(("channel_corrections", {"start": start, "end": today}))),
            reply(final_answer),
        )
    )
    run_id = await queue_run(app_pool, created.tenant_id)
    assert await run(model_settings, app_pool, created.tenant_id, run_id) == "succeeded"
    bodies = [call.request.content.decode() for call in route.calls]
    assert len(bodies) == 2
    assert "REDACTED" in bodies[1], "the tool output reached the model, redacted"
    for body in bodies:
        assert secret_email not in body
        assert "7946 0958" not in body


async def test_api_shows_exactly_the_recorded_tool_and_llm_calls(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    data_tenant: CreatedTenant,
    client: httpx.AsyncClient,
) -> None:
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    await run(test_settings, app_pool, data_tenant.tenant_id, run_id)
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    response = await client.get(
        f"/v1/investigations/{run_id}", headers={"Authorization": f"Bearer {data_tenant.api_key}"}
    )
    assert response.status_code == 200
    shown = response.json()
    assert shown["status"] == record["status"] == "succeeded"
    assert {t["id"] for t in shown["tool_calls"]} == {str(t["id"]) for t in record["tool_calls"]}
    assert [t["tool_name"] for t in shown["tool_calls"]] == [
        t["tool_name"]
        for t in sorted(record["tool_calls"], key=lambda t: (t["created_at"], t["id"]))
    ]
    assert shown["llm_calls"] == []
    assert shown["cost_usd"] == "0"
    assert shown["findings"] == record["result"]["findings"]
    # The stream: in order, history for a late subscriber, ending with the terminal state.
    stream = await client.get(
        f"/v1/investigations/{run_id}/events",
        headers={"Authorization": f"Bearer {data_tenant.api_key}"},
    )
    kinds = [
        line.split(":", 1)[1].strip()
        for line in stream.text.splitlines()
        if line.startswith("event:")
    ]
    assert kinds[0] == "started" and kinds[-1] == "final"
    assert kinds.count("tool_call") == len(record["tool_calls"])
    ids = [
        int(line.split(":", 1)[1]) for line in stream.text.splitlines() if line.startswith("id:")
    ]
    assert ids == sorted(ids)


@respx.mock
async def test_a_run_whose_heartbeats_keep_failing_stops_once_its_lease_is_over(
    model_settings: Settings,
    app_pool: asyncpg.Pool,
    data_tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import llm_service.jobs.repository as repository_module

    provider = Stalled(30, _late_answer)

    async def failing_heartbeat(*args: Any, **kwargs: Any) -> bool | None:
        raise asyncpg.TooManyConnectionsError("sorry, too many clients already")

    respx.post(OPENAI_URL).mock(side_effect=provider)
    monkeypatch.setattr(repository_module, "renew_leases", failing_heartbeat)
    run_id = await queue_run(app_pool, data_tenant.tenant_id, timeout_ms=20_000)
    runner = InvestigationRunner(
        app_pool, gateway_from_settings(model_settings, app_pool), "test-worker", lease_s=1.0
    )
    status = await runner.run(claim_of(run_id))
    # Not the 20 s run limit: once the lease is over another worker may take the run over.
    assert status == "lost"
    assert (provider.cut_off, provider.answered) == (1, 0)
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    assert record["status"] == "running"  # left for the worker that takes it over
    assert all(c["status"] != "pending" for c in record["llm_calls"])
