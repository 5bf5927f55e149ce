"""A model run that loses its provider, or whose model answers in prose, still ends with
findings; a model that takes a schema is sent one (respx, OpenAI wire format, real DB)."""

from __future__ import annotations

import json
import time
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import respx
from claimed_runs import claim_of, queue_claimed_run

from llm_service.db.pool import tenant_transaction
from llm_service.demo_data import generate_demo_data
from llm_service.investigations.runner import InvestigationRunner
from llm_service.llm.pricing import gateway_from_settings
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from tests.helpers.scripted_provider import OPENAI_URL, reply, scripted, tool_call_message

QUESTION = "Why did paid social revenue fall last week?"


@pytest.fixture(scope="module")
async def data_tenant(owner_pool: asyncpg.Pool) -> CreatedTenant:
    created = await create_tenant(owner_pool, "handed-over")
    async with tenant_transaction(owner_pool, created.tenant_id) as conn:
        await generate_demo_data(conn, created.tenant_id, events=2_000, seed=4)
    return created


async def queue_run(pool: asyncpg.Pool, tenant_id: UUID) -> UUID:
    return await queue_claimed_run(pool, tenant_id, QUESTION)


async def run(settings: Settings, pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> str:
    runner = InvestigationRunner(pool, gateway_from_settings(settings, pool), "test-worker")
    return await runner.run(claim_of(run_id))


async def load(pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID) -> dict[str, Any]:
    async with tenant_transaction(pool, tenant_id) as conn:
        record = dict(await conn.fetchrow("SELECT * FROM investigations WHERE id = $1", run_id))
        record["tool_calls"] = [
            dict(r)
            for r in await conn.fetch(
                "SELECT * FROM investigation_tool_calls WHERE investigation_id = $1", run_id
            )
        ]
        record["quarantined"] = await conn.fetchval(
            "SELECT count(*) FROM llm_validation_failures f JOIN llm_api_calls c"
            " ON c.id = f.llm_api_call_id WHERE c.investigation_id = $1",
            run_id,
        )
    return record


def outage(_: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"error": {"message": "overloaded", "type": "server_error"}})


def bodies(route: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in route.calls]


@respx.mock
async def test_a_provider_outage_mid_run_is_finished_by_the_deterministic_analyst(
    model_settings: Settings, app_pool: asyncpg.Pool, data_tenant: CreatedTenant
) -> None:
    today = date.today().isoformat()
    route = respx.post(OPENAI_URL).mock(
        side_effect=scripted(
            reply(
                tool_call_message(("channel_performance", {"start": "2026-01-01", "end": today}))
            ),
            outage,
        )
    )
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    status = await run(model_settings, app_pool, data_tenant.tenant_id, run_id)
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    assert route.call_count >= 2
    assert status == "succeeded" and record["status"] == "succeeded"
    assert record["degraded"] is True and "unavailable" in record["reason"]
    findings = record["result"]["findings"]
    tool_ids = {str(tc["id"]) for tc in record["tool_calls"]}
    assert findings and all(set(f["evidence"]) <= tool_ids for f in findings)
    # The model's own evidence is kept, and the analyst's plan ran too.
    names = [tc["tool_name"] for tc in record["tool_calls"]]
    assert "channel_performance" in names and "compare_periods" in names


@respx.mock
async def test_a_model_answering_in_prose_ends_with_templated_findings(
    model_settings: Settings, app_pool: asyncpg.Pool, data_tenant: CreatedTenant
) -> None:
    prose = {"content": "Paid social revenue fell mostly because of Facebook. Hope this helps!"}
    route = respx.post(OPENAI_URL).mock(side_effect=scripted(reply(prose)))
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    status = await run(model_settings, app_pool, data_tenant.tenant_id, run_id)
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    assert route.call_count == 2  # the answer and one repair
    assert status == "succeeded" and record["degraded"] is True
    assert "failed validation" in record["reason"]
    findings = record["result"]["findings"]
    assert findings and "USD" in findings[0]["claim"]
    assert record["quarantined"] == 2


@respx.mock
async def test_a_model_that_supports_it_receives_the_report_schema(
    model_settings: Settings, app_pool: asyncpg.Pool, data_tenant: CreatedTenant
) -> None:
    prose = {"content": "not json"}
    route = respx.post(OPENAI_URL).mock(side_effect=scripted(reply(prose)))
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    await run(model_settings, app_pool, data_tenant.tenant_id, run_id)
    sent = bodies(route)
    assert sent and all(b["response_format"]["type"] == "json_schema" for b in sent)
    schema = sent[0]["response_format"]["json_schema"]["schema"]
    assert {"summary", "findings"} <= set(schema["properties"])
    # The step call still offers the tools; the repair asks for the report alone.
    assert "tools" in sent[0] and "tools" not in sent[-1]


@respx.mock
async def test_a_model_without_schema_support_gets_the_prompt_only(
    model_settings: Settings, app_pool: asyncpg.Pool, data_tenant: CreatedTenant
) -> None:
    settings = model_settings.model_copy(update={"llm_model": "openai/gpt-3.5-turbo"})
    route = respx.post(OPENAI_URL).mock(side_effect=scripted(reply({"content": "prose"})))
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    await run(settings, app_pool, data_tenant.tenant_id, run_id)
    sent = bodies(route)
    assert sent and all("response_format" not in b for b in sent)
    assert "JSON object" in sent[0]["messages"][0]["content"]


ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"


def anthropic_message(content: list[dict[str, Any]], stop: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": f"msg_{time.monotonic_ns()}",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 900, "output_tokens": 60},
        },
    )


@respx.mock
async def test_an_anthropic_model_gets_the_schema_on_the_repair_and_its_answer_is_used(
    test_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    app_pool: asyncpg.Pool,
    data_tenant: CreatedTenant,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    settings = test_settings.model_copy(
        update={"llm_model": "anthropic/claude-haiku-4-5", "llm_max_attempts": 1}
    )
    report = {"summary": "Nothing stood out in the data I was shown.", "findings": []}

    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        names = [t.get("name") for t in body.get("tools") or []]
        if "json_tool_call" in names:  # the schema as a forced tool
            block = {"type": "tool_use", "id": "toolu_1", "name": "json_tool_call", "input": report}
            return anthropic_message([block], "tool_use")
        if "output_format" in body:  # or as Anthropic's native structured output
            return anthropic_message([{"type": "text", "text": json.dumps(report)}], "end_turn")
        return anthropic_message([{"type": "text", "text": "Revenue looks fine."}], "end_turn")

    route = respx.post(ANTHROPIC_URL).mock(side_effect=respond)
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    status = await run(settings, app_pool, data_tenant.tenant_id, run_id)
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    sent = bodies(route)
    # The step offers the data tools, not a forced answer tool; the repair carries the schema.
    assert "json_tool_call" not in [t.get("name") for t in sent[0].get("tools") or []]
    repair = sent[1]
    forced = repair.get("tool_choice") == {"type": "tool", "name": "json_tool_call"}
    assert forced or "output_format" in repair
    assert status == "succeeded" and record["degraded"] is False
    assert record["result"]["summary"] == report["summary"]
